"""The shared kernel, the ground floor every part stands on: settings, the dataset spec,
errors and a few small helpers (frames, bounded HTTP bodies, import timing, CLI output).

It imports no part of driftloop: ``registry``, ``training``, ``monitoring``, ``serving``,
``controller``, ``backtest`` and the ``driftloop`` command layer all import it, never the
other way round (the layers contract in ``pyproject.toml`` holds this).
"""
