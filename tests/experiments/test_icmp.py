"""C05 on this kernel: ping is ICMP echo, traceroute reads time-exceeded and
port-unreachable, and a host can be told to ignore ping."""

from __future__ import annotations

from typing import Any

import pytest

from framelab.experiments import icmp
from framelab.experiments.context import RunContext
from framelab.experiments.result import ClaimResult, Verdict
from framelab.lab.netns import leftover_namespaces


@pytest.fixture(scope="module")
def result() -> ClaimResult:
    [claim] = icmp.run(RunContext(rounds=1, quick=True))
    return claim


@pytest.mark.kernel
@pytest.mark.root
def test_ping_is_an_echo_request_answered_by_an_echo_reply(result: ClaimResult) -> None:
    ping = result.observed["ping"]
    assert (ping["type"], ping["code"], ping["from"]) == (0, 0, result.observed["target"])
    assert any("(echo request)" in line for line in result.trace)
    assert any("(echo reply)" in line for line in result.trace)


@pytest.mark.kernel
@pytest.mark.root
def test_traceroute_meets_the_router_then_the_target(result: ClaimResult) -> None:
    obs = result.observed
    hops = [(h["from"], h["type"], h["code"]) for h in obs["traceroute"]]
    assert hops == [(obs["router"], 11, 0), (obs["target"], 3, 3)]


@pytest.mark.kernel
@pytest.mark.root
def test_a_host_can_ignore_ping_and_still_answer_probes(result: ClaimResult) -> None:
    obs = result.observed
    assert obs["ping_with_icmp_echo_ignore_all"] is None
    assert obs["traceroute_with_icmp_echo_ignore_all"][-1]["type"] == 3
    assert result.verdict is Verdict.CONFIRMED
    assert leftover_namespaces() == []


def test_without_root_it_is_skipped_with_the_reason() -> None:
    [claim] = icmp.run(RunContext(root=False))
    assert claim.verdict is Verdict.SKIPPED and "root" in claim.summary


ROUTER, TARGET = "10.0.1.254", "10.0.2.1"


def synthetic(
    *, reply_type: int = icmp.ECHO_REPLY, answers_when_ignoring: bool = False
) -> icmp.IcmpRun:
    hops: list[icmp.IcmpSeen | None] = [
        icmp.IcmpSeen(ROUTER, 11, 0, 0.1),
        icmp.IcmpSeen(TARGET, 3, 3, 0.2),
    ]
    ignored = icmp.IcmpSeen(TARGET, 0, 0, 0.1) if answers_when_ignoring else None
    return icmp.IcmpRun(
        icmp.IcmpSeen(TARGET, reply_type, 0, 0.3), hops, ignored, hops, ROUTER, TARGET
    )


def test_judge_confirms_echo_time_exceeded_unreachable_and_an_ignored_ping() -> None:
    result = icmp.judge_c05(synthetic(), [])
    assert result.verdict is Verdict.CONFIRMED
    assert "answered with type 0 in 0.300 ms" in result.summary
    assert "TTL 1: time exceeded 11/0 from" in result.summary
    assert result.observed["traceroute"][0] == {"from": ROUTER, "type": 11, "code": 0, "ms": 0.1}


@pytest.mark.parametrize(
    "changed", [{"reply_type": 3}, {"answers_when_ignoring": True}], ids=["no echo", "not ignored"]
)
def test_judge_says_which_part_fails_when_an_answer_is_not_the_claimed_one(
    changed: dict[str, Any],
) -> None:
    result = icmp.judge_c05(synthetic(**changed), [])
    expected = [False, True, True] if "reply_type" in changed else [True, True, False]
    assert [p.holds for p in result.parts] == expected
    assert result.verdict is Verdict.PARTLY
