"""Benchmarks: each ``bench/bench_*.py`` module has ``main(argv) -> int`` and writes its
figures (with the command that made them) to ``docs/bench/<name>.md``; ``python -m bench``
runs them all and assembles ``docs/benchmarks.md``."""
