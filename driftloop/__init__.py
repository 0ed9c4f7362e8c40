"""driftloop: closed-loop continuous training for ML models.

This package is the command layer, the top floor: the ``driftloop`` command
(``driftloop.cli``) that assembles each part's own commands, the demo and the process
harness it runs the loop with. The parts live in the top-level packages ``registry``,
``training``, ``monitoring``, ``serving``, ``controller`` and ``backtest``; the shared
kernel they all stand on (settings, the dataset spec, errors) is ``kernel``
(see ``shared/DESIGN.md`` and the layers contract in ``pyproject.toml``).
"""

__version__ = "0.1.0"
