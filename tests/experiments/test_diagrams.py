"""Ladder and state diagrams: what they read from a trace, and that they draw it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from framelab.experiments.drawing import Drawing, Text, to_png, to_svg
from framelab.experiments.ladder import (
    Event,
    Marker,
    event_line,
    ladder,
    mark_delays,
    parse_trace,
    segments,
    wire_states,
    with_events,
)
from framelab.experiments.statediagram import EDGES, NODES, observed_transitions, state_diagram

HOST = "127.0.0.1"


def line(t_ms: float, src: int, dst: int, flags: str, rest: str, frame: int = 66) -> str:
    return f"{t_ms:9.3f}ms IP {HOST}.{src} > {HOST}.{dst}: Flags [{flags}], {rest} (frame {frame})"


HANDSHAKE_AND_CLOSE = [
    "# open, one request, close",
    line(0.0, 4000, 80, "S", "seq 0, win 1, options [mss 65495], length 0"),
    line(0.1, 80, 4000, "S.", "seq 0, ack 1, win 1, options [mss 65495], length 0"),
    line(0.2, 4000, 80, ".", "ack 1, win 1, length 0"),
    line(0.3, 4000, 80, "P.", "seq 1:5, ack 1, win 1, length 4", 70),
    line(44.3, 80, 4000, ".", "ack 5, win 1, length 0"),
    line(44.4, 4000, 80, "F.", "seq 5, ack 1, win 1, length 0"),
    line(44.5, 80, 4000, "F.", "seq 1, ack 6, win 1, length 0"),
    line(44.6, 4000, 80, ".", "ack 2, win 1, length 0"),
]


def test_parse_reads_flags_numbers_and_markers() -> None:
    items = parse_trace([*HANDSHAKE_AND_CLOSE, "... 3 more lines", "not a trace line"])
    assert isinstance(items[0], Marker) and items[0].text == "open, one request, close"
    assert isinstance(items[-1], Marker) and items[-1].omitted == 3
    segs = segments(items)
    assert [s.flags for s in segs] == ["S", "S.", ".", "P.", ".", "F.", "F.", "."]
    request = segs[3]
    assert (request.seq, request.seq_end, request.ack, request.length) == (1, 5, 1, 4)
    assert request.label == "[P.] seq 1:5 ack 1 len 4"


def test_a_late_bare_ack_is_marked_as_the_delayed_ack() -> None:
    items = parse_trace(HANDSHAKE_AND_CLOSE)
    mark_delays(items)
    notes = {i: s.notes for i, s in enumerate(segments(items)) if s.notes}
    assert notes == {4: ["delayed ACK: 44.0 ms"]}


def test_resends_are_retransmissions_with_their_back_off() -> None:
    sends = [
        line(t, 5, 6, "P.", "seq 1:101, ack 1, win 1, length 100") for t in (0, 200, 600, 1400)
    ]
    items = parse_trace(sends)
    mark_delays(items)
    assert [s.notes for s in segments(items)] == [
        [],
        ["retransmission 1: +200 ms"],
        ["retransmission 2: +400 ms (x2.0)"],
        ["retransmission 3: +800 ms (x2.0)"],
    ]


def test_states_follow_rfc_793_on_the_wire() -> None:
    changes = wire_states(parse_trace(HANDSHAKE_AND_CLOSE))
    seen = [
        (c.endpoint.rsplit(".", 1)[1], c.old, c.new) for i in sorted(changes) for c in changes[i]
    ]
    assert seen == [
        ("4000", "CLOSED", "SYN_SENT"),
        ("80", "LISTEN", "SYN_RECV"),
        ("4000", "SYN_SENT", "ESTABLISHED"),
        ("80", "SYN_RECV", "ESTABLISHED"),
        ("4000", "ESTABLISHED", "FIN_WAIT1"),
        ("80", "ESTABLISHED", "CLOSE_WAIT"),
        ("80", "CLOSE_WAIT", "LAST_ACK"),
        ("4000", "FIN_WAIT1", "TIME_WAIT"),  # the peer's FIN acknowledged ours: 3-segment close
        ("80", "LAST_ACK", "CLOSED"),
    ]


def test_a_reset_for_no_connection_moves_no_state() -> None:
    trace = [line(0.0, 9, 10, "R", "seq 5, win 0, length 0")]
    assert wire_states(parse_trace(trace)) == {}


def texts(drawing: Drawing) -> list[str]:
    return [s.text for s in drawing.shapes if isinstance(s, Text)]


def test_ladder_draws_one_arrow_per_segment_and_stays_readable_at_40(tmp_path: Path) -> None:
    small = ladder(HANDSHAKE_AND_CLOSE, "four")
    assert small is not None
    svg = to_svg(small)
    assert svg.count("<polygon") == 8  # one arrowhead per segment
    assert "127.0.0.1:4000 (client)" in texts(small) and "127.0.0.1:80 (server)" in texts(small)
    assert "delayed ACK: 44.0 ms" in texts(small) and "TIME_WAIT" in texts(small)
    data = [
        line(i * 0.01, 4000, 80, "P.", f"seq {i}:{i + 1}, ack 1, win 1, length 1")
        for i in range(40)
    ]
    big = ladder(data)
    assert big is not None and to_svg(big).count("<polygon") == 40
    per_row = (big.height - small.height) / (40 - 8)
    assert 20 <= per_row <= 30  # rows evenly spaced: 40 segments are 40 readable rows
    assert to_png(big, tmp_path / "big.png").read_bytes()[:4] == b"\x89PNG"
    assert ladder(["# nothing captured"]) is None


def test_state_diagram_lights_what_was_observed() -> None:
    results: list[dict[str, Any]] = [
        {"claim": "C10", "observed": {"simultaneous": ["FIN_WAIT1", "CLOSING", "TIME_WAIT"]}},
        {"claim": "C09", "trace": HANDSHAKE_AND_CLOSE},
    ]
    seen = observed_transitions(results)
    assert seen[("FIN_WAIT1", "CLOSING")] == {"C10"}
    assert seen[("SYN_SENT", "ESTABLISHED")] == {"C09"}
    svg = to_svg(state_diagram(results))
    for name in {n.strip() for n in NODES}:
        assert f">{name}<" in svg
    assert len(re.findall(r">C10<", svg)) == 2  # both simultaneous-close edges carry the claim
    faint = len([e for e in EDGES if e.pair not in seen])
    assert len(re.findall(r'<polyline[^>]*opacity="0.45"', svg)) == faint


def test_every_edge_joins_two_drawn_states() -> None:
    for edge in EDGES:
        assert edge.source in NODES and edge.target in NODES
    pairs = {edge.pair for edge in EDGES}
    assert ("FIN_WAIT1", "CLOSING") in pairs and ("SYN_SENT", "SYN_RECV") in pairs  # simultaneous
    assert ("ESTABLISHED", "CLOSED") in pairs and ("SYN_RECV", "LISTEN") in pairs  # resets


def test_socket_events_join_the_trace_in_time_order_and_are_drawn() -> None:
    started = 100.0
    events = [
        event_line(100.00035, started, (HOST, 4000), "CALL", "send(4) returned"),
        event_line(100.0445, started, (HOST, 80), "STATE", "CLOSE_WAIT"),
        event_line(200.0, started, (HOST, 80), "CALL", "after the cut"),
    ]
    merged = with_events([*HANDSHAKE_AND_CLOSE[:6], "... 3 more lines"], events)
    assert merged[5].endswith("CALL 127.0.0.1.4000: send(4) returned")  # after seq 1:5 at 0.3
    assert "CLOSE_WAIT" not in " ".join(merged[:6])
    assert "after the cut" not in " ".join(merged) and merged[-1] == "... 3 more lines"
    whole = with_events(HANDSHAKE_AND_CLOSE, events[:2])
    items = parse_trace(whole)
    kinds = [(i.kind, i.text) for i in items if isinstance(i, Event)]
    assert kinds == [("CALL", "send(4) returned"), ("STATE", "CLOSE_WAIT")]
    drawing = ladder(whole)
    assert drawing is not None
    assert "send(4) returned" in texts(drawing) and "CLOSE_WAIT (observed)" in texts(drawing)
