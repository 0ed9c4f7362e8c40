"""Scheduled retrains: a 5-field cron subset, in UTC (pure).

Fields ``minute hour day-of-month month day-of-week``; each is ``*``, a number, a range
``a-b``, a list ``a,b,c`` or a step ``*/n`` / ``a-b/n``. Day of week 0-6 with 0 = Sunday
(7 also Sunday). As in cron, when both day fields are restricted a day matching either fires.
Shorthands: ``@hourly``, ``@daily``, ``@weekly``, ``@monthly``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

SHORTHANDS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
              "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *"}
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


class CronError(ValueError):
    pass


def _field(text: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if body == "*":
            start, end = low, high
        elif "-" in body:
            a, b = body.split("-", 1)
            start, end = int(a), int(b)
        else:
            start = end = int(body)
        if not (low <= start <= end <= high) or step < 1:
            raise CronError(f"{part!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def parse(expr: str) -> tuple[frozenset[int], frozenset[int], frozenset[int], frozenset[int],
                             frozenset[int], bool]:
    """(minutes, hours, days, months, weekdays, both day fields restricted)."""
    text = SHORTHANDS.get(expr.strip(), expr.strip())
    parts = text.split()
    if len(parts) != 5:
        raise CronError(f"{expr!r}: expected 5 fields (minute hour day month weekday)")
    try:
        minute, hour, dom, month, dow = (_field(p, lo, hi)
                                         for p, (lo, hi) in zip(parts, _RANGES, strict=True))
    except ValueError as exc:
        raise CronError(f"{expr!r}: {exc}") from None
    if 7 in dow:
        dow = dow | {0}
    return minute, hour, dom, month, dow, parts[2] != "*" and parts[4] != "*"


def _day_matches(fields: tuple, day: datetime) -> bool:
    _, _, dom, month, dow, either = fields
    weekday = (day.weekday() + 1) % 7  # cron: 0 = Sunday
    if day.month not in month:
        return False
    if either:
        return day.day in dom or weekday in dow
    return day.day in dom and weekday in dow


def last_fire(expr: str, now: datetime, *, horizon_days: int = 366) -> datetime | None:
    """The latest minute at or before ``now`` that the expression matches (None if none)."""
    fields = parse(expr)
    minutes, hours = sorted(fields[0], reverse=True), sorted(fields[1], reverse=True)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    for back in range(horizon_days + 1):
        day = today - timedelta(days=back)
        if not _day_matches(fields, day):
            continue
        for hour in hours:
            for minute in minutes:
                when = day.replace(hour=hour, minute=minute)
                if when <= now:
                    return when
    return None
