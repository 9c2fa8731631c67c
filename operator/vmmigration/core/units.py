"""Pure: numbers as a person reads them — sizes, rates, durations and ages.

Sizes use Kubernetes' binary suffixes without a space (``3.2Gi``, ``512Mi``), as
``kubectl top`` prints them: one token per value keeps a table column one word,
so ``awk`` and ``cut`` still work on it.
"""

from __future__ import annotations

import math

_SUFFIXES = ("Ki", "Mi", "Gi", "Ti", "Pi", "Ei")


def size(count: float) -> str:
    """Bytes with a binary suffix: two significant figures below 10, whole above."""
    if not math.isfinite(count):
        return "?"
    if count < 0:
        return "-" + size(-count)
    if count < 1023.5:
        return f"{count:.0f}B"
    value = float(count)
    for suffix in _SUFFIXES:
        value /= 1024
        if round(value) < 1024 or suffix == _SUFFIXES[-1]:
            # 9.96 would round to "10.0": past that point the whole figure reads better.
            return f"{value:.1f}{suffix}" if value < 9.95 else f"{value:.0f}{suffix}"
    raise AssertionError("unreachable")  # pragma: no cover


def rate(bytes_per_second: float) -> str:
    return size(bytes_per_second) + "/s"


def duration(seconds: float) -> str:
    """A span the way a stopwatch shows it: ``850ms``, ``4.2s``, ``3m05s``, ``1h02m``, ``2d03h``."""
    if not math.isfinite(seconds):
        return "∞"
    if seconds < 0:
        return "-" + duration(-seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def age(seconds: float) -> str:
    """How long ago, coarse as kubectl's AGE column: ``45s``, ``12m``, ``3h20m``, ``5d``."""
    whole = max(0, int(seconds)) if math.isfinite(seconds) else 0
    if whole < 120:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 10:
        return f"{minutes}m{whole % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    return f"{days // 365}y{days % 365}d"


def milliseconds(ms: float) -> str:
    """A short pause, such as a switch-over's downtime: ``45ms``, ``1.3s``."""
    return duration(ms / 1000.0)
