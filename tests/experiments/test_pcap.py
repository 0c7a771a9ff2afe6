"""pcap files: the format round-trips, and a real reader (tshark) sees the lab's own trace."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from framelab.experiments.pcap import (
    LINKTYPE_ETHERNET,
    MAGIC_NANOSECONDS,
    Frame,
    PcapError,
    pcap_bytes,
    read_pcap,
)
from framelab.experiments.pcap_export import RunCaptures, line_key, write_pcaps
from framelab.experiments.result import ClaimResult, Verdict
from framelab.lab.capture import Capture, recording
from framelab.lab.packets import ACK, FIN, PSH, RST, SYN, URG

frames_strategy = st.lists(
    st.builds(
        Frame,
        time_ns=st.integers(0, 2**32 * 1_000_000_000 - 1),
        wire_len=st.integers(0, 70000),
        data=st.binary(max_size=300),
    ),
    max_size=20,
)


@given(frames_strategy)
def test_frames_round_trip(frames: list[Frame]) -> None:
    linktype, back = read_pcap(pcap_bytes(frames, snaplen=256))
    assert linktype == LINKTYPE_ETHERNET
    assert [f.time_ns for f in back] == [f.time_ns for f in frames]
    assert [f.data for f in back] == [f.data[:256] for f in frames]
    assert all(b.wire_len >= len(b.data) for b in back)


def test_header_is_nanosecond_libpcap() -> None:
    data = pcap_bytes([Frame(1_700_000_000_123_456_789, 60, b"x" * 60)])
    assert int.from_bytes(data[:4], "little") == MAGIC_NANOSECONDS
    assert data[4:8] == b"\x02\x00\x04\x00"  # version 2.4
    assert int.from_bytes(data[28:32], "little") == 123_456_789  # the nanoseconds field


@given(st.binary(max_size=100))
def test_reader_refuses_garbage_with_a_reason(data: bytes) -> None:
    try:
        read_pcap(data)
    except PcapError as exc:
        assert str(exc)


def test_trace_line_keys() -> None:
    line = "   12.345ms IP 127.0.0.1.5 > 127.0.0.1.6: Flags [S], seq 0, win 1, length 0 (frame 74)"
    assert line_key(line) == ("12.345", "127.0.0.1.5 > 127.0.0.1.6", "74")
    assert line_key("# a title") is None and line_key("... 3 more lines") is None


def tcpdump_flags(value: int) -> str:
    """tshark's tcp.flags as the lab's trace writes them."""
    letters = [("F", FIN), ("S", SYN), ("R", RST), ("P", PSH), ("U", URG)]
    text = "".join(ch for ch, bit in letters if value & bit)
    return text + ("." if value & ACK else "")


def converse(listener: socket.socket) -> None:
    """Handshake, a request, a reply, and both sides close: 8 or 9 segments."""
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    client.sendall(b"hello")
    assert server.recv(100) == b"hello"
    server.sendall(b"world!")
    assert client.recv(100) == b"world!"
    client.close()
    assert server.recv(100) == b""
    server.close()


@pytest.mark.root
def test_tshark_reads_the_same_segments_as_the_lab_trace(tmp_path: Path) -> None:
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark is not installed (Debian package tshark)")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with recording() as captures, Capture("lo", ports=[port]) as cap:
            converse(listener)
            assert cap.wait_for(lambda p: p.has("F") and p.sport != port) is not None
            assert cap.wait_for(lambda p: p.has("F") and p.sport == port) is not None
            assert cap.wait_for(lambda p: p.flags == "." and p.dport == port and p.ack > 1)
    trace = cap.lines(port)
    cut = [*trace[:3], f"... {len(trace) - 3} more lines"]  # a claim shows only a few
    result = ClaimResult("demo", "C99", Verdict.CONFIRMED, "ok", trace=cut)
    run = RunCaptures()
    run.add("demo", captures)
    written = write_pcaps(tmp_path, [result], run)
    assert written["C99"] == tmp_path / "C99.pcap" and "demo" not in written
    fields = ["tcp.flags", "tcp.seq", "tcp.ack", "tcp.len", "frame.len", "frame.time_epoch"]
    out = subprocess.run(
        [
            tshark,
            "-r",
            str(written["C99"]),
            "-T",
            "fields",
            *[x for f in fields for x in ("-e", f)],
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    rows = [line.split("\t") for line in out.strip().splitlines()]
    assert len(rows) == len(trace) == len(cap.tcp(port))  # the whole connection, not the cut
    for row, line, pkt in zip(rows, trace, cap.tcp(port), strict=True):
        flags, seq, ack, length, frame_len, epoch = row
        assert f"Flags [{tcpdump_flags(int(flags, 16))}]" in line
        assert f"length {length} " in line and f"(frame {frame_len})" in line
        if "seq " in line:  # both count from the ISN: tshark's relative numbers
            assert f"seq {seq}" in line
        if int(flags, 16) & ACK:
            assert f"ack {ack}," in line
        assert abs(float(epoch) * 1e9 - pkt.time_ns) < 2000  # the kernel's time, to the µs
