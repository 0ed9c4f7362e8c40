"""The exception tree every part raises from.

Two kinds of failure matter to the controller (see STYLE.md habit 4):
``RetryableError`` (try again later, with a delay and a budget) and everything
else, which is permanent for the step that raised it.
"""

from __future__ import annotations


class DriftloopError(Exception):
    """Base of every error driftloop raises on purpose."""


class UsageError(DriftloopError):
    """Bad input from a person: a wrong spec, a wrong file, a wrong option.

    The CLI prints it as one line and exits with code 2.
    """


class SpecError(UsageError):
    """The dataset spec is invalid."""


class DataError(UsageError):
    """The data does not fit the spec (missing columns, one class, empty window...)."""


class RetryableError(DriftloopError):
    """A transient failure: the same call may succeed later."""
