"""X1: closing one listener of a reuseport group, judged from observations."""

from __future__ import annotations

from typing import Any

import pytest

from framelab.experiments.context import RunContext
from framelab.experiments.result import Verdict
from framelab.experiments.reuseport import EXPERIMENT, judge_x1


def observed(migrate: int, closed: int, reset: int, accepted: int) -> dict[str, Any]:
    return {
        "tcp_migrate_req": migrate,
        "clients": 16,
        "queued_on_closed": closed,
        "queued_on_other": 16 - closed,
        "accepted_by_other": accepted,
        "clients_reset": reset,
    }


def test_the_judge_follows_the_observations() -> None:
    off, on = observed(0, 9, 9, 7), observed(1, 4, 0, 16)
    assert [p.holds for p in judge_x1(off, on)] == [True, True]
    assert [p.holds for p in judge_x1(observed(0, 9, 0, 16), on)] == [False, True]
    assert [p.holds for p in judge_x1(off, observed(1, 4, 4, 12))] == [True, False]
    assert judge_x1(observed(0, 0, 0, 16), on)[0].holds is None  # nothing was queued there


@pytest.mark.root
def test_closing_a_reuseport_listener_on_this_kernel() -> None:
    (result,) = EXPERIMENT.run(RunContext(root=True))
    off, on = result.observed["migrate_off"], result.observed["migrate_on"]
    assert off["clients_reset"] == off["queued_on_closed"]
    assert on["clients_reset"] == 0 and on["accepted_by_other"] == on["clients"]
    assert result.verdict is Verdict.CONFIRMED
    assert all("Flags [R" in line for line in result.trace)
    assert len([t for t in result.trace if t.startswith("tcp_migrate_req=0")]) >= 1
