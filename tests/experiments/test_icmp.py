"""C05 on this kernel: ping is ICMP echo, traceroute reads time-exceeded and
port-unreachable, and a host can be told to ignore ping."""

from __future__ import annotations

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
