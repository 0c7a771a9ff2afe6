"""The TCP state machine (RFC 793's figure 6), drawn, with this run's transitions lit.

Nodes carry Linux's state names (what /proc/net/tcp and TCP_INFO report).
Besides the figure's own edges the drawing has the paths a lab run actually
meets: simultaneous open and close, FIN_WAIT1 straight to TIME_WAIT when the
peer's FIN acknowledges ours, resets (refused, abort, after a write to a
closed peer) and Linux's orphan timeout out of FIN_WAIT2.

Observed transitions come from two kinds of evidence in the results: state
sequences an experiment read from the socket (any list of state names in
`observed`), and the states the segments of a trace move each side through
(experiments/ladder.py). Each observed edge is drawn bold and labelled with
the claims that produced it; the others stay faint. Linear in the results.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from framelab.experiments.drawing import Anchor, Drawing, Line, Rect, Text
from framelab.experiments.ladder import parse_trace, wire_states

BOX_W, BOX_H = 124, 38
#: node -> center; CLOSED appears twice, as in RFC 793's figure
NODES: dict[str, tuple[float, float]] = {
    "CLOSED": (500, 70),
    "LISTEN": (500, 190),
    "SYN_RECV": (160, 310),
    "SYN_SENT": (840, 310),
    "ESTABLISHED": (500, 430),
    "FIN_WAIT1": (160, 560),
    "CLOSE_WAIT": (840, 560),
    "FIN_WAIT2": (160, 700),
    "CLOSING": (500, 700),
    "LAST_ACK": (840, 700),
    "TIME_WAIT": (500, 820),
    "CLOSED ": (840, 820),  # the second CLOSED box (trailing space: its own key)
}
STATES = {name.strip() for name in NODES}
#: what Linux calls some states, as experiments report them
ALIASES = {"CLOSE": "CLOSED", "SYN_RCVD": "SYN_RECV", "FIN_WAIT_1": "FIN_WAIT1",
           "FIN_WAIT_2": "FIN_WAIT2", "ESTAB": "ESTABLISHED"}  # fmt: skip
WIDTH, HEIGHT = 1010, 960
LIT = "#d35400"


@dataclass(frozen=True)
class Edge:
    source: str  # a NODES key
    target: str
    event: str  # what makes it happen, RFC 793's 'event / action'
    points: tuple[tuple[float, float], ...]
    label_at: tuple[float, float]
    anchor: Anchor = "middle"

    @property
    def pair(self) -> tuple[str, str]:
        return self.source.strip(), self.target.strip()


EDGES: tuple[Edge, ...] = (
    Edge("CLOSED", "LISTEN", "passive open", ((480, 89), (480, 171)), (474, 134), "end"),
    Edge("LISTEN", "CLOSED", "close", ((520, 171), (520, 89)), (526, 134), "start"),
    Edge("CLOSED", "SYN_SENT", "active open / snd SYN",
         ((562, 62), (810, 62), (810, 291)), (690, 55)),
    Edge("SYN_SENT", "CLOSED", "rcv RST (refused) or close",
         ((870, 291), (870, 36), (500, 36), (500, 51)), (690, 30)),
    Edge("LISTEN", "SYN_RECV", "rcv SYN / snd SYN,ACK",
         ((438, 182), (140, 182), (140, 291)), (290, 176)),
    Edge("SYN_RECV", "LISTEN", "rcv RST",
         ((185, 291), (185, 200), (438, 200)), (300, 216)),
    Edge("LISTEN", "SYN_SENT", "send / snd SYN",
         ((562, 190), (780, 190), (780, 291)), (672, 184)),
    Edge("SYN_SENT", "SYN_RECV", "rcv SYN / snd SYN,ACK (simultaneous open)",
         ((778, 310), (222, 310)), (500, 303)),
    Edge("SYN_RECV", "ESTABLISHED", "rcv ACK of SYN",
         ((222, 322), (438, 420)), (300, 382), "end"),
    Edge("SYN_SENT", "ESTABLISHED", "rcv SYN,ACK / snd ACK",
         ((778, 322), (562, 420)), (700, 382), "start"),
    Edge("SYN_RECV", "FIN_WAIT1", "close / snd FIN",
         ((120, 329), (120, 541)), (114, 440), "end"),
    Edge("ESTABLISHED", "FIN_WAIT1", "close / snd FIN",
         ((438, 440), (222, 550)), (322, 486), "end"),
    Edge("ESTABLISHED", "CLOSE_WAIT", "rcv FIN / snd ACK",
         ((562, 440), (778, 550)), (678, 486), "start"),
    Edge("ESTABLISHED", "CLOSED ", "rcv RST, or close with unread data / snd RST",
         ((562, 420), (985, 420), (985, 830), (902, 830)), (990, 398), "end"),
    Edge("CLOSE_WAIT", "CLOSED ", "write, rcv RST",
         ((902, 560), (950, 560), (950, 812), (902, 812)), (944, 597), "end"),
    Edge("FIN_WAIT1", "FIN_WAIT2", "rcv ACK of FIN",
         ((140, 579), (140, 681)), (134, 630), "end"),
    Edge("FIN_WAIT1", "CLOSING", "rcv FIN / snd ACK (simultaneous close)",
         ((222, 570), (438, 690)), (345, 612), "start"),
    Edge("FIN_WAIT1", "TIME_WAIT", "rcv FIN+ACK of FIN / snd ACK",
         ((185, 579), (185, 640), (300, 640), (300, 808), (438, 808)), (306, 760), "start"),
    Edge("CLOSE_WAIT", "LAST_ACK", "close / snd FIN",
         ((840, 579), (840, 681)), (846, 630), "start"),
    Edge("FIN_WAIT2", "TIME_WAIT", "rcv FIN / snd ACK",
         ((160, 719), (160, 832), (438, 832)), (300, 846)),
    Edge("FIN_WAIT2", "CLOSED ", "closed: rcv data / snd RST, or tcp_fin_timeout",
         ((115, 719), (115, 900), (840, 900), (840, 839)), (480, 894)),
    Edge("CLOSING", "TIME_WAIT", "rcv ACK of FIN",
         ((500, 719), (500, 801)), (506, 760), "start"),
    Edge("LAST_ACK", "CLOSED ", "rcv ACK of FIN",
         ((840, 719), (840, 801)), (846, 760), "start"),
    Edge("TIME_WAIT", "CLOSED ", "2 MSL (Linux: 60 s)",
         ((562, 820), (778, 820)), (670, 813)),
)  # fmt: skip


def normalise(state: object) -> str | None:
    if not isinstance(state, str):
        return None
    name = ALIASES.get(state.strip().upper(), state.strip().upper())
    return name if name in STATES else None


def state_sequences(value: Any) -> Iterator[list[str]]:
    """Every list of two or more TCP state names anywhere in an observed value."""
    if isinstance(value, Mapping):
        for item in value.values():
            yield from state_sequences(item)
    elif isinstance(value, list):
        names = [normalise(v) for v in value]
        if len(names) >= 2 and all(names):
            yield [n for n in names if n]
        else:
            for item in value:
                yield from state_sequences(item)


def observed_transitions(results: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], set[str]]:
    """{(from, to): claims} from socket state sequences and trace segments (JSON results)."""
    seen: dict[tuple[str, str], set[str]] = {}
    for result in results:
        claim = str(result.get("claim", "?"))
        for sequence in state_sequences(result.get("observed") or {}):
            for old, new in itertools.pairwise(sequence):
                if old != new:
                    seen.setdefault((old, new), set()).add(claim)
        for changes in wire_states(parse_trace(result.get("trace") or [])).values():
            for change in changes:
                before, after = normalise(change.old), normalise(change.new)
                if before and after and before != after:
                    seen.setdefault((before, after), set()).add(claim)
    return seen


def _claims_text(claims: set[str]) -> str:
    ordered = sorted(claims)
    shown = ", ".join(ordered[:4])
    return shown + (f" +{len(ordered) - 4}" if len(ordered) > 4 else "")


def state_diagram(results: Iterable[Mapping[str, Any]], title: str = "") -> Drawing:
    """The drawing, with the transitions these results observed highlighted."""
    seen = observed_transitions(results)
    drawn = {edge.pair for edge in EDGES}
    drawing = Drawing(WIDTH, HEIGHT, title=title or "TCP state machine")
    lit_states = {state for pair in seen for state in pair}
    for edge in EDGES:
        claims = seen.get(edge.pair)
        color, width, opacity = (LIT, 2.4, 1.0) if claims else ("#8a94a0", 1.1, 0.45)
        drawing.add(Line(edge.points, color, width, arrow=True, opacity=opacity,
                         dash=None if claims or "RST" not in edge.event else "5 3"))  # fmt: skip
    for edge in EDGES:  # labels over every line
        claims = seen.get(edge.pair)
        x, y = edge.label_at
        anchor = edge.anchor
        drawing.add(
            Text(x, y, edge.event, size=10.5, color="#222" if claims else "#8a94a0",
                 anchor=anchor, background="#ffffff", bold=bool(claims))
        )  # fmt: skip
        if claims:
            drawing.add(
                Text(x, y + 12, _claims_text(claims), size=10, color=LIT, anchor=anchor,
                     bold=True, background="#ffffff")
            )  # fmt: skip
    for key, (cx, cy) in NODES.items():
        name = key.strip()
        lit = name in lit_states
        drawing.add(
            Rect(cx - BOX_W / 2, cy - BOX_H / 2, BOX_W, BOX_H, fill="#fff4e8" if lit else "#f6f7f9",
                 stroke=LIT if lit else "#8a94a0", stroke_width=2 if lit else 1, radius=6)
        )  # fmt: skip
        drawing.add(Text(cx, cy + 5, name, size=13, anchor="middle", bold=True,
                         color="#222" if lit else "#777"))  # fmt: skip
    drawing.add(Text(16, 24, drawing.title, size=15, bold=True))
    extra = sorted(pair for pair in seen if pair not in drawn)
    legend = (
        "orange: transitions this run observed, with the claims that showed them; "
        "grey: not observed; dashed: resets"
    )
    drawing.add(Text(16, HEIGHT - 30, legend, size=10.5, color="#555"))
    if extra:
        text = "also observed: " + "; ".join(
            f"{a} > {b} ({_claims_text(seen[a, b])})" for a, b in extra
        )
        drawing.add(Text(16, HEIGHT - 14, text[:180], size=10.5, color="#555"))
    return drawing
