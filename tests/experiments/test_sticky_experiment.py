"""C06, C17, C20 on this kernel: TCP merges and splits sends, a length prefix
restores the messages, UDP keeps every datagram whole.

(Named apart from tests/test_sticky.py, the `framelab sticky` client's tests.)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from framelab.experiments import sticky
from framelab.experiments.context import RunContext
from framelab.experiments.result import ClaimResult, Verdict
from framing import TruncatedFrame, encode_frame


@pytest.fixture(scope="module")
def results() -> dict[str, ClaimResult]:
    return {r.claim: r for r in sticky.run(RunContext(rounds=2, quick=True))}


def observed(result: ClaimResult, *keys: str) -> Any:
    value: Any = result.observed
    for key in keys:
        value = value[key]
    return value


@pytest.mark.kernel
def test_one_result_per_claim_in_registry_order(results: dict[str, ClaimResult]) -> None:
    assert list(results) == list(sticky.EXPERIMENT.claims) == ["C06", "C17", "C20"]
    assert all(r.experiment == "sticky" for r in results.values())


@pytest.mark.kernel
def test_queued_sends_come_out_of_one_read(results: dict[str, ClaimResult]) -> None:
    merged = observed(results["C17"], "merged")
    assert merged["sends"] == sticky.MESSAGES
    assert merged["data_segments"] == sticky.MESSAGES  # each send left as its own segment
    assert merged["reads"] == 1  # ...and the receiver got them all in one recv()
    assert merged["read_sizes"] == [sticky.MESSAGES * sticky.MESSAGE_SIZE]
    assert merged["bytes_intact"]


@pytest.mark.kernel
def test_one_large_send_takes_several_reads_even_asking_for_all(
    results: dict[str, ClaimResult],
) -> None:
    split = observed(results["C17"], "split")
    assert split["sends"] == 1
    assert split["recv_size"] == sticky.LARGE_PAYLOAD  # every recv() asked for everything
    assert split["reads"] > 1
    assert split["bytes_intact"]
    assert results["C17"].verdict is Verdict.CONFIRMED


@pytest.mark.kernel
def test_length_prefix_restores_exactly_the_messages(results: dict[str, ClaimResult]) -> None:
    merged = observed(results["C20"], "merged")
    split = observed(results["C20"], "split")
    assert merged["messages_decoded"] == merged["messages_sent"] == 10
    assert merged["messages_per_read"] == [10]  # ten frames, one read
    assert merged["identical"] and split["identical"]
    assert split["messages_decoded"] == 1 and split["reads"] > 1  # one frame, many reads
    assert results["C20"].verdict is Verdict.CONFIRMED


@pytest.mark.kernel
def test_udp_datagrams_arrive_whole_and_separate(results: dict[str, ClaimResult]) -> None:
    udp = results["C06"].observed
    assert udp["recvfrom_sizes"] == udp["sent_sizes"]
    assert 0 in udp["sent_sizes"]  # even an empty datagram is a message of its own
    assert udp["each_whole_and_in_order"]
    assert udp["left_over_after_n_reads"] == 0
    cut = udp["short_buffer"]
    assert cut["got"] == 10 and cut["msg_trunc"] and cut["next_is_next_datagram"]


@pytest.mark.kernel
def test_udp_header_is_eight_bytes_by_the_size_limit(results: dict[str, ClaimResult]) -> None:
    udp = results["C06"].observed
    assert udp["largest_payload"] == 65507  # 65535 - 20 (IP) - 8 (UDP)
    assert udp["one_more_byte"] == "EMSGSIZE"
    assert udp["udp_header_by_size_limit"] == 8
    assert results["C06"].verdict is Verdict.CONFIRMED


@pytest.mark.kernel
@pytest.mark.root
def test_udp_header_is_eight_bytes_in_every_captured_datagram(
    results: dict[str, ClaimResult],
) -> None:
    udp = results["C06"].observed
    assert udp["udp_header_by_capture"] == [8] * len(udp["sent_sizes"])
    assert any("UDP, length 65507" in line for line in results["C06"].trace)


@pytest.mark.kernel
@pytest.mark.root
def test_capture_shows_one_segment_per_merged_send(results: dict[str, ClaimResult]) -> None:
    data_lines = [line for line in results["C17"].trace if "length 40" in line]
    assert len(data_lines) == sticky.MESSAGES


def test_decoding_follows_the_reads_however_they_cut_the_frames() -> None:
    wire = b"".join(encode_frame(m) for m in (b"", b"abc", b"x" * 300))
    chunks = [wire[:2], wire[2:11], wire[11:100], wire[100:]]  # frames end at 4, 11, 315
    messages, per_read = sticky.decode_reads(chunks)
    assert messages == [b"", b"abc", b"x" * 300]
    assert per_read == [0, 2, 0, 1]


def test_a_stream_cut_inside_a_frame_is_an_error_not_fewer_messages() -> None:
    with pytest.raises(TruncatedFrame):
        sticky.decode_reads([encode_frame(b"abcdef")[:7]])


def test_udp_check_without_capture_relies_on_the_size_limit() -> None:
    result = sticky.check_c06(None)
    assert result.observed["udp_header_by_capture"] is None
    assert result.trace == []
    assert result.verdict is Verdict.CONFIRMED


# --- the C20 judge, on synthetic observations ------------------------------------------


def framed(
    sends: int, reads: int, per_read: list[int], identical: bool = True
) -> sticky.FramedCase:
    stream = sticky.Stream([14] * sends, sends, [14 * sends // reads] * reads, [], 1, 65536)
    return sticky.FramedCase(stream, [10] * sends, per_read, identical)


def test_c20_judge_confirms_when_every_message_comes_back_however_the_reads_cut() -> None:
    result = sticky.judge_c20(framed(10, 1, [10]), framed(1, 14, [0] * 13 + [1]))
    assert result.verdict is Verdict.CONFIRMED
    assert "10 frames read in 1 recv()" in result.summary
    assert result.observed["reads_differed_from_sends"] is True


def test_c20_judge_says_differs_for_a_lost_or_altered_message() -> None:
    lost = sticky.judge_c20(framed(10, 1, [9]), framed(1, 2, [0, 1]))
    assert lost.verdict is Verdict.DIFFERS and "decoded 9/10" in lost.summary
    altered = sticky.judge_c20(framed(10, 1, [10], identical=False), framed(1, 2, [0, 1]))
    assert altered.verdict is Verdict.DIFFERS


# -- the judges, on observations made up here ------------------------------------------
def made_stream(sends: list[int], reads: list[int], data: bytes) -> sticky.Stream:
    chunks, pos = [], 0
    for size in reads:
        chunks.append(data[pos : pos + size])
        pos += size
    return sticky.Stream(sends, len(sends), reads, chunks, 5000, 65536)


def test_c17_holds_part_by_part_from_send_and_read_sizes() -> None:
    small, large = bytes(range(100)) * 2, bytes(300_000)
    merged = made_stream([100, 100], [200], small)
    split = made_stream([300_000], [65_536] * 4 + [37_856], large)
    c17 = sticky.judge_c17(merged, small, split, large, [])
    assert [p.holds for p in c17.parts] == [True, True, True]
    assert "2 send() calls (2 segments) came out of 1 recv()" in c17.parts[0].evidence
    # each send read on its own, the large one in one read: neither merging nor splitting seen
    apart = made_stream([100, 100], [100, 100], small)
    whole = made_stream([300_000], [300_000], large)
    c17 = sticky.judge_c17(apart, small, whole, large, [])
    assert [p.holds for p in c17.parts] == [False, False, True]
    # a byte changed on the way
    damaged = made_stream([100, 100], [200], b"x" + small[1:])
    assert sticky.judge_c17(damaged, small, split, large, []).parts[2].holds is False


def udp_burst(**changes: object) -> sticky.UdpBurst:
    sent = [bytes(size) for size in (1, 100, 1400, 65507)]
    burst = sticky.UdpBurst(
        sent=sent,
        received=list(sent),
        left_over=0,
        drops=0,
        short_buffer={"msg_trunc": True, "next_is_next_datagram": True},
        largest_payload=65507,
        one_more_byte="EMSGSIZE",
        header_by_capture=[8, 8, 8, 8],
    )
    return dataclasses.replace(burst, **changes)  # type: ignore[arg-type]


def test_c06_is_judged_from_the_burst() -> None:
    c06 = sticky.judge_c06(udp_burst(), [])
    assert [p.holds for p in c06.parts] == [True, True]
    assert "65535 - 20 - 65507" in c06.parts[0].evidence
    joined = udp_burst(received=[bytes(1), bytes(101), bytes(1399), bytes(65507)])
    assert [p.holds for p in sticky.judge_c06(joined, []).parts] == [True, False]
    queued = udp_burst(left_over=1)
    assert [p.holds for p in sticky.judge_c06(queued, []).parts] == [True, False]
    other_header = udp_burst(largest_payload=65499, header_by_capture=None)
    c06 = sticky.judge_c06(other_header, [])
    assert c06.parts[0].holds is False and "not captured" in c06.parts[0].evidence
