"""driftloop: closed-loop continuous training for tabular ML models.

This package is the shared kernel (settings, the dataset spec, errors) and the
``driftloop`` command that assembles each part's own commands. The parts live in
the top-level packages ``registry``, ``training``, ``serving``, ``monitoring`` and
``controller`` (see ``shared/DESIGN.md``).
"""

__version__ = "0.1.0"
