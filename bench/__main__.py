"""``make bench``: run every benchmark module, then assemble docs/benchmarks.md."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

HEADER = """# Benchmarks

Each section is written by its benchmark module (`bench/bench_*.py`) when it runs, with the
command that produced it, the machine it ran on and the peer it was run against in the same
run. `make bench` runs them all (`python -m bench --only NAME` runs one) and rebuilds this page
from `docs/bench/*.md`. Figures are measured, never typed in.

"""


def assemble() -> Path:
    parts = [HEADER]
    for section in sorted((DOCS / "bench").glob("*.md")):
        parts.append(section.read_text().rstrip() + "\n\n")
    out = DOCS / "benchmarks.md"
    out.write_text("".join(parts))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", action="append", default=[], help="run only these (e.g. serving)")
    parser.add_argument("--assemble-only", action="store_true", help="just rebuild benchmarks.md")
    args = parser.parse_args(argv)
    failed = []
    if not args.assemble_only:
        names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                       if m.name.startswith("bench_"))
        for name in names:
            if args.only and name.removeprefix("bench_") not in args.only:
                continue
            print(f"== {name}", flush=True)
            module = importlib.import_module(f"bench.{name}")
            if module.main([]) != 0:
                failed.append(name)
    print(f"wrote {assemble()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
