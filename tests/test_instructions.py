"""Instruction counts per message under callgrind: the parser, and one real count."""

from __future__ import annotations

import shutil

import pytest

from framelab.benchmarks.grid import Case
from framelab.benchmarks.instructions import count, thread_totals
from framelab.benchmarks.targets import FRAMED


def test_totals_add_every_thread() -> None:
    report = "PID 7: python\n\n  Totals:        Ir \n   Th 1  68,537,702 \n   Th 2       1,000 \n"
    assert thread_totals(report) == 68_538_702
    assert thread_totals("PID 7: python\n") == 0


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("callgrind_control") is None, reason="valgrind not installed")
def test_framed_echo_costs_a_plausible_number_of_instructions_per_message() -> None:
    counted = count(FRAMED, Case(64, 8, 2), seconds=1.0)
    assert counted.error is None, counted.error
    assert counted.messages > 100
    # a frame through the event loop, the decoder and the encoder: hundreds to
    # a few tens of thousands of instructions, never millions
    assert counted.per_message is not None and 200 < counted.per_message < 50_000
