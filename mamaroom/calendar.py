"""Working days in China: the official calendar, with its holidays and
make-up workdays (the `chinesecalendar` package)."""

from __future__ import annotations

from datetime import date

import chinese_calendar


def is_workday(day: date) -> bool:
    """China's official calendar (holidays and make-up workdays); plain
    weekdays for years the calendar package does not know yet."""
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:
        return day.weekday() < 5
