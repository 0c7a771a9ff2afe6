"""Counting in sentences: "1 connection", "2 connections", "1 send -> 1 read".

Every count a command prints goes through `plural`, so no summary says
"1 replies" whatever the run observed.
"""

from __future__ import annotations


def plural(count: int, noun: str, many: str | None = None) -> str:
    """'1 read', '3 reads'; `many` for nouns whose plural is not noun + s."""
    word = noun if count == 1 else (many or noun + "s")
    return f"{count:,} {word}"
