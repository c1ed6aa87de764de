"""`--since 7d` / `--until 2026-12-01T12:00Z`: durations back from now, or ISO-8601 instants."""

from __future__ import annotations

import datetime as dt
import re

from sifguard.errors import BadInputError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
LOWEST, HIGHEST = 0.0, 253402300799.0      # 1970-01-01 … 9999-12-31T23:59:59Z: what `iso` can print
_DURATION = re.compile(r"(\d{1,7})([smhdw])")


def parse_when(text: str, now: float, flag: str = "--since") -> float:
    """Seconds since the epoch for a duration back from `now` (90m, 24h, 7d, 2w, 30s)
    or an ISO-8601 date/time (a time without an offset is UTC)."""
    t = (text or "").strip()
    m = _DURATION.fullmatch(t)
    if m:
        return max(LOWEST, now - int(m.group(1)) * _UNITS[m.group(2)])
    try:
        when = dt.datetime.fromisoformat(t)
    except ValueError:
        raise BadInputError(f"{flag}: {text!r} is neither a duration (90m, 24h, 7d, 2w) nor an ISO-8601 "
                            "time (2026-12-01, 2026-12-01T08:00Z)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    ts = when.timestamp()
    if not LOWEST <= ts <= HIGHEST:
        raise BadInputError(f"{flag}: {text!r} is out of range (1970 … 9999)")
    return ts


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def record_time(value) -> float | None:
    """A record's `time` stamp (the writer's `YYYY-MM-DDTHH:MM:SS.ffffffZ`, or any ISO-8601
    form older versions wrote) as seconds since the epoch; None when absent or unreadable."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    ts = when.timestamp()
    return ts if LOWEST <= ts <= HIGHEST else None
