"""Scheduled retrains: 5-field cron expressions in UTC, read by ``croniter`` (pure).

Fields ``minute hour day-of-month month day-of-week``; each is ``*``, a number, a range
``a-b``, a list ``a,b,c`` or a step ``*/n`` / ``a-b/n``; months and days may be named
(``jan``-``dec``, ``sun``-``sat``). Day of week 0-6 with 0 = Sunday (7 also Sunday). As in
cron, when both day fields are restricted a day matching either fires. Shorthands:
``@hourly``, ``@daily``, ``@weekly``, ``@monthly``, ``@yearly``. croniter's extensions
(``L`` for the last day of the month, ``fri#2`` for the second Friday) work too.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from croniter import CroniterBadDateError, CroniterError, croniter

from kernel.errors import UsageError

SHORTHANDS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
              "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *",
              "@annually": "0 0 1 1 *"}
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))


class CronError(ValueError):
    pass


def _fields(expr: str) -> str:
    """The five fields of ``expr`` (shorthands expanded), checked by croniter."""
    text = SHORTHANDS.get(expr.strip().lower(), expr.strip())
    if len(text.split()) != 5:  # croniter also takes 6 or 7 (seconds, year): not here
        raise CronError(f"{expr!r}: expected 5 fields (minute hour day month weekday)")
    try:
        croniter.expand(text)
    except (CroniterError, ValueError) as exc:
        raise CronError(f"{expr!r}: {exc}") from None
    return text


def validate(expr: str, *, setting: str = "DRIFTLOOP_CONTROLLER_SCHEDULE") -> str:
    """``expr`` stripped if it is a valid schedule; else a one-line :class:`UsageError`
    naming the setting, the expression and croniter's reason (the CLI exits 2)."""
    try:
        _fields(expr)
    except CronError as exc:
        raise UsageError(f"{setting}: not a cron schedule: {exc}") from None
    return expr.strip()


def parse(expr: str) -> tuple[frozenset[int], frozenset[int], frozenset[int], frozenset[int],
                             frozenset[int], bool]:
    """(minutes, hours, days, months, weekdays, both day fields restricted).

    Weekdays are 0-6 with 0 = Sunday. croniter's ``L`` and ``#`` forms have no such sets
    and are refused here (``last_fire`` takes them)."""
    text = _fields(expr)
    expanded, nth_weekday = croniter.expand(text)
    if nth_weekday:
        raise CronError(f"{expr!r}: '#' weekdays are not a set of days")
    sets: list[frozenset[int]] = []
    for values, (low, high) in zip(expanded, _RANGES, strict=True):
        if values == ["*"]:
            sets.append(frozenset(range(low, high + 1)))
        elif all(isinstance(v, int) for v in values):
            sets.append(frozenset(int(v) % 7 if high == 6 else int(v) for v in values))
        else:
            raise CronError(f"{expr!r}: 'L' days are not a set of days")
    minute, hour, dom, month, dow = sets
    return minute, hour, dom, month, dow, expanded[2] != ["*"] and expanded[4] != ["*"]


def last_fire(expr: str, now: datetime, *, horizon_days: int = 366) -> datetime | None:
    """The latest minute at or before ``now`` that the expression matches (None if none
    since midnight ``horizon_days`` days before ``now``'s day)."""
    text = _fields(expr)
    start = now.replace(second=0, microsecond=0) + timedelta(minutes=1)  # prev is strictly before
    try:
        when: datetime = croniter(text, start).get_prev(datetime)
    except CroniterBadDateError:  # never matches (30 February)
        return None
    earliest = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=horizon_days)
    return when if when >= earliest else None
