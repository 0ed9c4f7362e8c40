"""Replay a labelled history, in time order, through the controller's own decision logic.

The floor above ``controller``: it drives the controller through its public ports (a
replayed log, a simulated clock, an in-process launcher, the in-memory registry) and
compares the configured policy with never and always retraining. ``driftloop backtest``
(``backtest.cli``) is its command; ``backtest.report`` writes its pages and MLflow runs.
"""
