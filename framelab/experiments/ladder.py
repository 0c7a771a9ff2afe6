"""Ladder (sequence) diagrams of a claim's packet trace.

Input: the trace lines a result carries (tcpdump-like, framelab/lab/packets.py),
so a diagram can be drawn from a live run or from a saved JSON file alike.
One vertical line per endpoint, one arrow per segment with its flags,
sequence and acknowledgement numbers, length and time since the first one.
Each side's TCP state is written beside its line where the segments move it
(RFC 793's transitions, applied to what was seen on the wire); event lines
an experiment adds to its trace (`event_line()`: a socket call as it
returned, a state it read from the socket) are dots on their endpoint's
line, in time order with the segments. The delays
that matter are marked: a wait of 30 ms or more before a bare ACK is a delayed
ACK; a segment sent again is a retransmission, its wait compared with the
previous one (the doubling RTO). Rows are evenly spaced, so 4 and 40 segments
read alike; a long wait adds a break with its length instead of empty space.
Linear in the number of lines.
"""

from __future__ import annotations

import itertools
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from framelab.experiments.drawing import Anchor, Drawing, Line, Rect, Text, text_width

_STAMP = re.compile(r"^\s*(-?\d+\.\d+)ms IP (\S+) > (\S+?): (.*?)(?: \(frame (\d+)\))?\s*$")
_FLAGS = re.compile(r"Flags \[([^\]]*)\]")
_SEQ = re.compile(r"seq (\d+)(?::(\d+))?")
_ACK = re.compile(r"ack (\d+)")
_LENGTH = re.compile(r"length (\d+)")
_MORE = re.compile(r"^\.\.\. (\d+) more lines")
#: a wait before a bare ACK at least this long is the delayed-ACK timer (Linux: 40 ms minimum)
DELAYED_ACK_MS = 30.0
#: most endpoint lines drawn; the rest share one "other" line
MAX_LANES = 6

ROW = 24
EVENT_ROW = 17
GAP_ROW = 16
TIME_COLUMN = 96
STATE_COLUMN = 92
COLORS = {"S": "#1b7f3b", "F": "#1f5fbf", "R": "#c62828", "P": "#222", ".": "#777"}


@dataclass
class Segment:
    """One trace line: who sent what to whom, when (ms since its capture began)."""

    t_ms: float
    src: str
    dst: str
    kind: str  # tcp, udp, icmp, ip
    flags: str = ""
    seq: int | None = None
    seq_end: int | None = None
    ack: int | None = None
    length: int = 0
    text: str = ""
    notes: list[str] = field(default_factory=list)  # delayed ACK, retransmission...
    retransmission: bool = False

    @property
    def label(self) -> str:
        if self.kind != "tcp":
            return self.text
        parts = [f"[{self.flags}]"]
        if self.seq is not None:
            parts.append(f"seq {self.seq}" + (f":{self.seq_end}" if self.seq_end else ""))
        if self.ack is not None:
            parts.append(f"ack {self.ack}")
        parts.append(f"len {self.length}")
        return " ".join(parts)


@dataclass
class Marker:
    """A section title ('# ...') or the count of lines a trace left out."""

    text: str
    omitted: int = 0


@dataclass
class Event:
    """Something the lab saw on a socket, not on the wire: a call it made, a state it read."""

    t_ms: float
    endpoint: str  # address.port, as in the packet lines
    kind: str  # "CALL" or "STATE"
    text: str


Item = Segment | Marker | Event
EVENT_KINDS = ("CALL", "STATE")
_EVENT = re.compile(r"^\s*(-?\d+\.\d+)ms (CALL|STATE) (\S+): (.*?)\s*$")


def event_line(when: float, started: float, endpoint: tuple[str, int], kind: str, text: str) -> str:
    """A trace line for a socket event, on the packet lines' clock (time.monotonic())."""
    return f"{(when - started) * 1000:9.3f}ms {kind} {endpoint[0]}.{endpoint[1]}: {text}"


def with_events(lines: Sequence[str], events: Sequence[str]) -> list[str]:
    """Packet lines with event lines placed among them by time.

    Titles stay where they are; events after a '... N more lines' cut are
    dropped, since the segments around them are not shown."""
    pending = sorted(events, key=_stamp)
    out: list[str] = []
    for line in lines:
        if _MORE.match(line):
            out.append(line)
            return out
        stamp = _stamp(line) if _STAMP.match(line) else None
        while stamp is not None and pending and _stamp(pending[0]) <= stamp:
            out.append(pending.pop(0))
        out.append(line)
    return out + pending


def _stamp(line: str) -> float:
    try:
        return float(line.split("ms", 1)[0])
    except ValueError:
        return float("inf")


def parse_trace(lines: Iterable[str]) -> list[Item]:
    """Trace lines as segments and markers; lines of any other form are skipped."""
    items: list[Item] = []
    for line in lines:
        if line.startswith("# "):
            items.append(Marker(line[2:].strip()))
            continue
        more = _MORE.match(line)
        if more:
            items.append(Marker(f"{more[1]} more segments, in the pcap", int(more[1])))
            continue
        event = _EVENT.match(line)
        if event:
            items.append(Event(float(event[1]), event[3], event[2], event[4]))
            continue
        match = _STAMP.match(line)
        if match:
            items.append(_segment(float(match[1]), match[2], match[3], match[4]))
    return items


def _segment(t_ms: float, src: str, dst: str, rest: str) -> Segment:
    flags = _FLAGS.search(rest)
    length = _LENGTH.search(rest)
    if flags:
        seq, ack = _SEQ.search(rest), _ACK.search(rest)
        return Segment(
            t_ms, src, dst, "tcp", flags=flags[1],
            seq=int(seq[1]) if seq else None,
            seq_end=int(seq[2]) if seq and seq[2] else None,
            ack=int(ack[1]) if ack else None,
            length=int(length[1]) if length else 0,
        )  # fmt: skip
    kind = "udp" if rest.startswith("UDP") else "icmp" if rest.startswith("ICMP") else "ip"
    text = rest.split(" (frame")[0]
    return Segment(t_ms, src, dst, kind, length=int(length[1]) if length else 0, text=text)


def segments(items: Iterable[Item]) -> list[Segment]:
    return [item for item in items if isinstance(item, Segment)]


# -- what the segments say ---------------------------------------------------------------
def mark_delays(items: Sequence[Item]) -> None:
    """Notes on the segments that end a delay that matters (in place)."""
    sent: dict[tuple[str, str, str, int | None, int], list[float]] = {}
    previous: Segment | None = None
    for seg in segments(items):
        gap = seg.t_ms - previous.t_ms if previous else 0.0
        if seg.kind == "tcp" and (seg.length or "S" in seg.flags or "F" in seg.flags):
            key = (seg.src, seg.dst, seg.flags.replace(".", ""), seg.seq, seg.length)
            times = sent.setdefault(key, [])
            if times:
                seg.retransmission = True
                wait = seg.t_ms - times[-1]
                note = f"retransmission {len(times)}: +{wait:.0f} ms"
                if len(times) >= 2:
                    before = times[-1] - times[-2]
                    if before > 0:
                        note += f" (x{wait / before:.1f})"
                seg.notes.append(note)
            times.append(seg.t_ms)
        elif (
            previous is not None
            and seg.flags == "."
            and not seg.length
            and previous.dst == seg.src
            and (previous.length or "F" in previous.flags)
            and gap >= DELAYED_ACK_MS
        ):
            seg.notes.append(f"delayed ACK: {gap:.1f} ms")
        previous = seg


@dataclass(frozen=True)
class StateChange:
    endpoint: str
    old: str
    new: str


#: the state a side must have been in, when its first segment seen moves it to `new`
_BEFORE = {"SYN_SENT": "CLOSED", "SYN_RECV": "LISTEN"}


def wire_states(items: Sequence[Item]) -> dict[int, list[StateChange]]:
    """{segment index: state changes}: RFC 793's transitions applied to what was seen.

    A connection first seen after its handshake starts as ESTABLISHED."""
    state: dict[tuple[str, str], str] = {}  # (endpoint, peer) -> state
    fin_end: dict[tuple[str, str], int] = {}  # our FIN's sequence number + 1
    changes: dict[int, list[StateChange]] = {}

    def move(index: int, me: str, peer: str, new: str) -> None:
        old = state.get((me, peer)) or _BEFORE.get(new, "ESTABLISHED")
        if old != new:
            state[me, peer] = new
            changes.setdefault(index, []).append(StateChange(me, old, new))

    for index, seg in enumerate(segments(items)):
        if seg.kind != "tcp":
            continue
        me, peer, flags = seg.src, seg.dst, seg.flags
        if "R" in flags:  # only sides seen in a state: a reset may answer no connection
            for side in ((me, peer), (peer, me)):
                if side in state:  # a passive open that is reset goes back to LISTEN
                    move(index, *side, "LISTEN" if state[side] == "SYN_RECV" else "CLOSED")
            continue
        if "S" in flags and "." not in flags:  # a new connection, even on an old 4-tuple
            state.pop((me, peer), None)
            state.pop((peer, me), None)
            move(index, me, peer, "SYN_SENT")
            continue
        if "S" in flags:  # SYN+ACK
            move(index, me, peer, "SYN_RECV")
            if state.get((peer, me)) == "SYN_SENT":
                move(index, peer, me, "ESTABLISHED")
            continue
        if "." in flags and state.get((peer, me)) == "SYN_RECV":
            move(index, peer, me, "ESTABLISHED")
        acks_their_fin = seg.ack is not None and seg.ack >= fin_end.get((peer, me), 1 << 33)
        if "." in flags and acks_their_fin:
            after = {"FIN_WAIT1": "FIN_WAIT2", "CLOSING": "TIME_WAIT", "LAST_ACK": "CLOSED"}
            if "F" in flags:  # FIN+ACK of FIN: FIN_WAIT1 goes straight to TIME_WAIT, below
                after.pop("FIN_WAIT1")
            if state.get((peer, me)) in after:
                move(index, peer, me, after[state[peer, me]])
        if "F" in flags:
            if seg.seq is not None:
                fin_end[me, peer] = seg.seq + seg.length + 1
            mine = state.get((me, peer), "ESTABLISHED")
            move(index, me, peer, "LAST_ACK" if mine == "CLOSE_WAIT" else "FIN_WAIT1")
            theirs = state.get((peer, me), "ESTABLISHED")
            after_fin = {
                "ESTABLISHED": "CLOSE_WAIT",
                "FIN_WAIT1": "CLOSING",
                "FIN_WAIT2": "TIME_WAIT",
            }
            if theirs in after_fin:
                # our FIN may also acknowledge theirs (3-segment close): FIN_WAIT1 -> TIME_WAIT
                acked = seg.ack is not None and seg.ack >= fin_end.get((peer, me), 1 << 33)
                new = "TIME_WAIT" if theirs == "FIN_WAIT1" and acked else after_fin[theirs]
                move(index, peer, me, new)
    return changes


# -- layout ----------------------------------------------------------------------------
@dataclass
class Block:
    """A titled part of a trace, drawn with its own endpoint lines."""

    title: Marker | None
    items: list[Item] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # lanes, left to right
    ends: dict[int, tuple[str, str]] = field(default_factory=dict)  # id(segment) -> lanes


def blocks(items: Sequence[Item]) -> list[Block]:
    out: list[Block] = []
    for item in items:
        if isinstance(item, Marker) and not item.omitted:
            out.append(Block(item))
            continue
        if not out:
            out.append(Block(None))
        out[-1].items.append(item)
    for block in out:
        assign_lanes(block)
    return out


def _has_port(endpoint: str) -> bool:
    head, _, tail = endpoint.rpartition(".")
    return tail.isdigit() and head.count(".") == 3


def _host(endpoint: str) -> str:
    return endpoint.rpartition(".")[0] if _has_port(endpoint) else endpoint


def _first_port(ported: list[str], host: str) -> str:
    return next((e for e in ported if _host(e) == host), host)


def assign_lanes(block: Block) -> None:
    """One lane per endpoint (address and port), in order of appearance, at most MAX_LANES.

    An ICMP message names hosts, not ports: an error goes from the port the
    last datagram was sent to back to its sender; other messages go on the
    first line of their host (or a line of their own)."""
    segs = segments(block.items)
    ported = [e for seg in segs for e in (seg.src, seg.dst) if _has_port(e)]
    last: Segment | None = None  # the last segment between ports: what an ICMP error answers
    raw: list[tuple[Segment, str, str]] = []
    for seg in segs:
        src, dst = seg.src, seg.dst
        if not _has_port(src):
            src = last.dst if last and _host(last.dst) == src else _first_port(ported, src)
        if not _has_port(dst):
            dst = last.src if last and _host(last.src) == dst else _first_port(ported, dst)
        if _has_port(seg.src) and _has_port(seg.dst):
            last = seg
        raw.append((seg, src, dst))
    counts: dict[str, int] = {}
    for _, src, dst in raw:
        counts[src] = counts.get(src, 0) + 1
        counts[dst] = counts.get(dst, 0) + 1
    names = list(counts)
    if len(names) > MAX_LANES:
        kept = set(sorted(names, key=lambda n: -counts[n])[: MAX_LANES - 1])
        names = [n for n in names if n in kept] + [OTHER]
    block.names = names
    for seg, src, dst in raw:
        block.ends[id(seg)] = (src if src in names else OTHER, dst if dst in names else OTHER)


OTHER = "other ports"


def _display(endpoint: str) -> str:
    if _has_port(endpoint):
        host, _, port = endpoint.rpartition(".")
        return f"{host}:{port}"
    return endpoint


def _roles(block: Block) -> dict[str, str]:
    out: dict[str, str] = {}
    for seg in segments(
        block.items
    ):  # a port that answers SYN+ACK listens; one that sends SYN connects
        if seg.kind == "tcp" and "S" in seg.flags:
            src, _ = block.ends[id(seg)]
            out.setdefault(src, "server" if "." in seg.flags else "client")
    return out


def _color(seg: Segment) -> str:
    if seg.retransmission:
        return "#d35400"
    if seg.kind != "tcp":
        return "#6a1b9a" if seg.kind == "icmp" else "#222"
    for letter in ("R", "S", "F", "P"):
        if letter in seg.flags:
            return COLORS[letter]
    return COLORS["P"] if seg.length else COLORS["."]


def ladder(lines: Sequence[str], title: str = "") -> Drawing | None:
    """The diagram for a trace, or None when it has no segment to draw."""
    items = parse_trace(lines)
    segs = segments(items)
    if not segs:
        return None
    mark_delays(items)
    states = wire_states(items)
    index_of = {id(seg): i for i, seg in enumerate(segs)}
    parts = blocks(items)
    widest = max(text_width(s.label, 11, mono=True) for s in segs)
    spacing = max(230.0, widest + 40)
    most = max(len(b.names) for b in parts)
    left = TIME_COLUMN + STATE_COLUMN
    width = left + spacing * max(most - 1, 1) + STATE_COLUMN + 200
    notes_x = left + spacing * max(most - 1, 1) + STATE_COLUMN
    drawing = Drawing(width, 0, title=title)
    if title:
        drawing.add(Text(10, 20, title, size=14, bold=True))
    gaps = [b.t_ms - a.t_ms for a, b in itertools.pairwise(segs)]
    long_wait = max(5.0, (statistics.median(gaps) if gaps else 0.0) * 20)
    start = segs[0].t_ms
    state = _Layout(drawing, segs[0].t_ms, long_wait, width)
    y = 34.0 if title else 14.0
    shown_names: list[str] = []
    for block in parts:
        if block.title:
            y += 4
            drawing.add(Rect(8, y, width - 16, 19, fill="#eef1f5", stroke="none", radius=3))
            drawing.add(Text(14, y + 14, block.title.text, size=11.5, color="#334", bold=True))
            y += 25
        if not block.names:
            continue
        xs = {name: left + i * spacing for i, name in enumerate(block.names)}
        if len(block.names) == 1:
            xs[block.names[0]] = left + spacing / 2
        if block.names != shown_names:
            roles = _roles(block)
            for name in block.names:
                caption = _display(name) + (f" ({roles[name]})" if name in roles else "")
                drawing.add(Text(xs[name], y + 12, caption, size=12, anchor="middle", bold=True))
            shown_names = block.names
            y += 22
        lanes_from = len(drawing.shapes)
        top = y
        y += 14
        for item in block.items:
            if isinstance(item, Marker):  # lines the trace left out
                drawing.add(Text(left, y, f"... {item.text}", size=10.5, color="#888"))
                y += ROW - 6
                continue
            if isinstance(item, Event):
                y = state.event(item, y, xs, block, start)
                continue
            y = state.segment(
                item, y, xs, block, states.get(index_of[id(item)], []), notes_x, start
            )
        lane_lines = [Line(((xs[n], top), (xs[n], y - 8)), "#9aa3ad", 1.5) for n in block.names]
        drawing.shapes[lanes_from:lanes_from] = lane_lines
    drawing.height = y + 42
    legend = (
        "time since the first segment; states beside a line: as the segments move them (RFC 793)",
        "dots: socket calls as they returned, states the lab read (observed); orange: delays",
    )
    for number, text in enumerate(legend):
        drawing.add(Text(10, drawing.height - 22 + 12 * number, text, size=10, color="#888"))
    return drawing


@dataclass
class _Layout:
    """Draws one row at a time, remembering the previous time for breaks."""

    drawing: Drawing
    previous_t: float
    long_wait: float
    width: float

    def event(
        self, event: Event, y: float, xs: dict[str, float], block: Block, start: float
    ) -> float:
        """A call or a state read, as a dot on its endpoint's line with the text beside it."""
        if event.endpoint not in xs:
            return y
        y = self._break(event.t_ms, y, xs)
        x = xs[event.endpoint]
        observed = event.kind == "STATE"
        text = f"{event.text} (observed)" if observed else event.text
        color = "#1a4fa0" if observed else "#444"
        # the row is the event's own: the text goes right of the line, where arrows run elsewhere
        self.drawing.add(Rect(x - 3.5, y - 6.5, 7, 7, fill=color, stroke="none", radius=3.5))
        self.drawing.add(
            Text(x + 8, y, text, size=10, mono=not observed, bold=observed, color=color,
                 background="#ffffff")
        )  # fmt: skip
        self.drawing.add(
            Text(TIME_COLUMN - 6, y, f"{event.t_ms - start:.3f} ms", size=9, color="#999",
                 anchor="end", mono=True)
        )  # fmt: skip
        return y + EVENT_ROW

    def _break(self, t_ms: float, y: float, xs: dict[str, float]) -> float:
        """A long wait before this row: its length, and a break in every line."""
        if t_ms - self.previous_t >= self.long_wait:
            self.drawing.add(
                Text(TIME_COLUMN - 6, y - 2, f"{t_ms - self.previous_t:.1f} ms later",
                     size=10, color="#b26a00", anchor="end")
            )  # fmt: skip
            for x in xs.values():
                self.drawing.add(Line(((x - 5, y - 9), (x + 5, y - 5)), "#999", 1))
                self.drawing.add(Line(((x - 5, y - 4), (x + 5, y)), "#999", 1))
            y += GAP_ROW
        self.previous_t = max(self.previous_t, t_ms)
        return y

    def segment(
        self,
        seg: Segment,
        y: float,
        xs: dict[str, float],
        block: Block,
        changes: list[StateChange],
        notes_x: float,
        start: float,
    ) -> float:
        drawing = self.drawing
        y = self._break(seg.t_ms, y, xs)
        src, dst = block.ends[id(seg)]
        x1, x2 = xs[src], xs[dst]
        color = _color(seg)
        anchor: Anchor = "middle"
        if x1 == x2:  # both ends on one line (merged lanes): a short loop
            loop = ((x1, y), (x1 + 30, y), (x1 + 30, y + 6), (x1, y + 6))
            drawing.add(Line(loop, color, 1.3, arrow=True))
            mid, anchor = x1 + 36, "start"
        else:
            drawing.add(Line(((x1, y), (x2, y + 6)), color, 1.6, arrow=True))
            mid = (x1 + x2) / 2
        drawing.add(
            Text(mid, y - 3, seg.label, size=11, color=color, anchor=anchor, mono=True,
                 background="#ffffff")
        )  # fmt: skip
        drawing.add(
            Text(TIME_COLUMN - 6, y + 5, f"{seg.t_ms - start:.3f} ms", size=10, color="#666",
                 anchor="end", mono=True)
        )  # fmt: skip
        for number, note in enumerate(seg.notes):
            drawing.add(
                Text(notes_x, y + 4 + 12 * number, note, size=10.5, color="#b26a00", bold=True)
            )
        names = block.names
        for change in changes:
            new_state = change.new
            lane = src if change.endpoint == seg.src else dst
            lx = xs[lane]
            # beside the line, on the side the arrow does not take
            other_end = x2 if lane == src else x1
            on_left = lane == names[0] and len(names) > 1
            if lane not in (names[0], names[-1]):
                on_left = other_end > lx
            drawing.add(
                Text(lx - 5 if on_left else lx + 5, y + 7, new_state, size=9.5, color="#3b5998",
                     anchor="end" if on_left else "start", background="#ffffff")
            )  # fmt: skip
        return y + ROW
