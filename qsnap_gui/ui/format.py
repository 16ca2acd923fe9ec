"""How numbers, durations and times read in the window: the same everywhere."""

from __future__ import annotations

from datetime import datetime


def count(n: int | None) -> str:
    return "" if n is None else f"{n:,}"


def percent(share: float) -> str:
    """Floor to a tenth, so 99.96 % never reads as a full 100 %."""
    tenths = int(share * 1000)
    return f"{tenths // 10}.{tenths % 10} %"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{seconds:.1f} s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def rate(rows_per_second: float) -> str:
    if rows_per_second >= 10_000:
        return f"{rows_per_second / 1000:,.0f}k rows/s"
    return f"{rows_per_second:,.0f} rows/s"


def when(value: datetime | None) -> str:
    """Database timestamps are UTC without a zone (DOMAIN.md); headers say so."""
    return value.strftime("%Y-%m-%d %H:%M") if value else "never"


def stamp(value: datetime | None) -> str:
    """To the second, for a single row's times (the inspector)."""
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"
