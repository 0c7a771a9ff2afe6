"""C08, C09, C10, C14 on this kernel: every TCP state, held long enough to
read; the handshake and teardown on the wire."""

from __future__ import annotations

import pytest

from framelab.experiments import states
from framelab.experiments.context import RunContext
from framelab.experiments.result import ClaimResult, Verdict


@pytest.fixture(scope="module")
def results() -> dict[str, ClaimResult]:
    return {r.claim: r for r in states.run(RunContext(rounds=1, quick=True))}


@pytest.mark.kernel
def test_every_state_of_the_machine_is_observed(results: dict[str, ClaimResult]) -> None:
    seen = results["C10"].observed["states_seen"]
    assert set(seen) == set(states.ALL_STATES)
    assert results["C10"].observed["states_missing"] == []
    assert "TCP_DEFER_ACCEPT" in seen["SYN_RECV"]
    assert "full accept queue" in seen["SYN_SENT"]


@pytest.mark.kernel
def test_the_closers_paths(results: dict[str, ClaimResult]) -> None:
    obs = results["C10"].observed
    assert obs["active_closer"] == ["ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT"]
    assert obs["passive_closer"] == ["ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSE"]
    assert obs["simultaneous_close"] == ["FIN_WAIT1", "CLOSING", "TIME_WAIT"]


@pytest.mark.kernel
@pytest.mark.root
def test_handshake_and_teardown_on_the_wire(results: dict[str, ClaimResult]) -> None:
    assert results["C09"].observed["first_three_segments"] == ["S", "S.", "."]
    teardown = results["C10"].observed["teardown"]
    assert teardown["later"] == ["client [F.]", "server [.]", "server [F.]", "client [.]"]
    assert teardown["prompt"] == ["client [F.]", "server [F.]", "client [.]"]
    assert results["C10"].verdict is Verdict.CONFIRMED


@pytest.mark.kernel
@pytest.mark.root
def test_header_lengths_and_the_mss_option(results: dict[str, ClaimResult]) -> None:
    c08 = results["C08"].observed
    assert c08["syn_header_length"] == 40  # 20 + MSS, SACK-permitted, timestamps, wscale
    assert max(c08["header_lengths_seen"]) <= 60 and min(c08["header_lengths_seen"]) >= 20
    # a 60-byte header is read to its end; what follows it is payload, never options
    for witness in ("timestamp", "window scale"):
        assert c08["probes"][f"sixty ({witness})"]["syn_header_length"] == 60
        assert c08["probes"][f"sixty ({witness})"]["answered"] is True
        assert c08["probes"][f"past_sixty ({witness})"]["syn_ack"] is True
        assert c08["probes"][f"past_sixty ({witness})"]["answered"] is False
    assert results["C08"].verdict is Verdict.CONFIRMED
    c14 = results["C14"].observed
    assert c14["segments_with_mss_option"] == ["S", "S."] * 2  # two connections
    assert c14["segments_without"] > 0
    assert all(r.verdict is Verdict.CONFIRMED for r in results.values())


def test_without_root_the_wire_claims_are_skipped() -> None:
    by_claim = {r.claim: r for r in states.run(RunContext(root=False))}
    assert {c for c, r in by_claim.items() if r.verdict is Verdict.SKIPPED} == {"C08", "C09", "C14"}
    # the teardown's segments need a capture: that part is not observed, so not passed
    assert [p.holds for p in by_claim["C10"].parts] == [None, True, True, True]
    assert by_claim["C10"].verdict is Verdict.PARTLY
    assert by_claim["C10"].observed["teardown"] is None


def walk(active: list[str], passive: list[str], missing: tuple[str, ...] = ()) -> states.StateWalk:
    made = states.StateWalk()
    made.seen = {s: "made up" for s in states.ALL_STATES if s not in missing}
    made.active, made.passive = active, passive
    return made


def test_c10_judged_part_by_part_on_synthetic_observations() -> None:
    teardown = {"later": states.FOUR_WAY, "prompt": states.FOUR_WAY[:1] + states.FOUR_WAY[2:]}
    full = states.judge_c10(walk(states.ACTIVE_PATH, states.PASSIVE_PATH), teardown)
    assert [p.holds for p in full.parts] == [True, True, True, True]
    assert full.verdict is Verdict.CONFIRMED
    assert "4 segments when the passive side closes later" in full.summary
    three = {"later": teardown["prompt"], "prompt": teardown["prompt"]}
    skipped_wait2 = ["ESTABLISHED", "FIN_WAIT1", "TIME_WAIT"]
    odd = states.judge_c10(walk(skipped_wait2, states.PASSIVE_PATH, ("CLOSING",)), three)
    assert [p.holds for p in odd.parts] == [False, False, True, False]
    assert odd.verdict is Verdict.PARTLY
    assert "not seen: CLOSING" in odd.summary
    nothing = states.judge_c10(walk([], [], states.ALL_STATES), three)
    assert nothing.verdict is Verdict.DIFFERS


def long_header_probe(witness: str, knob: str, header: int, answered: bool) -> dict[str, object]:
    return {"witness": witness, knob: "1", "syn_header_length": header, "syn_payload": 0,
            "syn_ack": True, "syn_ack_options": [], "answered": answered}  # fmt: skip


def test_c08_judges_with_the_witness_whose_knob_is_on() -> None:
    """tcp_timestamps=0 silences the timestamp witness: the window scale still
    answers, and the part is judged on it instead of failing."""
    probes = {
        "sixty (timestamp)": long_header_probe("timestamp", "net.ipv4.tcp_timestamps", 60, False),
        "past_sixty (timestamp)": long_header_probe(
            "timestamp", "net.ipv4.tcp_timestamps", 60, False
        ),
        "sixty (window scale)": long_header_probe(
            "window scale", "net.ipv4.tcp_window_scaling", 60, True
        ),
        "past_sixty (window scale)": long_header_probe(
            "window scale", "net.ipv4.tcp_window_scaling", 60, False
        ),
    }
    probes["sixty (timestamp)"]["net.ipv4.tcp_timestamps"] = "0"
    probes["past_sixty (timestamp)"]["net.ipv4.tcp_timestamps"] = "0"
    c08 = states.judge_c08([], probes, [])
    assert [p.holds for p in c08.parts] == [True, True]
    assert "timestamp not answerable" in c08.parts[0].evidence
    # with the window scale knob on and no answer, the header was not read to its end
    probes["sixty (window scale)"]["answered"] = False
    assert [p.holds for p in states.judge_c08([], probes, []).parts] == [False, True]
    # both knobs off: nothing can answer, so nothing is judged
    probes["sixty (window scale)"]["net.ipv4.tcp_window_scaling"] = "0"
    probes["past_sixty (window scale)"]["net.ipv4.tcp_window_scaling"] = "0"
    silent = states.judge_c08([], probes, [])
    assert [p.holds for p in silent.parts] == [None, None]
    assert "not observable" in silent.parts[0].evidence
