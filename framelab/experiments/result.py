"""What an experiment reports: one ClaimResult per claim, verdict computed from its parts.

A claim of the notes often says several things at once ("aborted, with a
reset"). Each thing is a Part, judged on its own from what the run observed:
`holds` True, False, or None when this run could not observe it (and the
evidence says why). The claim's verdict is derived, never written in:

- every part holds                       -> confirmed
- some hold, the others fail or are None -> partly
- none holds, at least one fails         -> differs
- no part could be observed              -> skipped

A part that could not be observed never counts as passing. `expected` holds
what the kernel's rules predict (labelled so in every rendering), kept apart
from `observed`, which only holds what this run saw.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from framelab.experiments.claims import TEXTS


class Verdict(enum.StrEnum):
    CONFIRMED = "confirmed"
    PARTLY = "partly"
    DIFFERS = "differs"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Part:
    """One checkable statement inside a claim, and what this run saw of it."""

    part: str
    holds: bool | None
    evidence: str

    @property
    def mark(self) -> str:
        return {True: "holds", False: "fails", None: "not observed"}[self.holds]


def derive_verdict(parts: Iterable[Part]) -> Verdict:
    """The claim's verdict from its parts (see the module docstring)."""
    seen = [p.holds for p in parts]
    if not seen or all(h is None for h in seen):
        return Verdict.SKIPPED
    if all(h is True for h in seen):
        return Verdict.CONFIRMED
    if any(h is True for h in seen):
        return Verdict.PARTLY
    return Verdict.DIFFERS


def parts_summary(parts: Sequence[Part]) -> str:
    """'holds: X (evidence); fails: Y (evidence); not observed: Z (why)'."""
    chunks = []
    for mark in ("holds", "fails", "not observed"):
        items = [f"{p.part} ({p.evidence})" for p in parts if p.mark == mark]
        if items:
            chunks.append(f"{mark}: " + "; ".join(items))
    return " | ".join(chunks)


@dataclass
class ClaimResult:
    """The outcome for one claim (experiments/claims.py): verdict, parts, evidence."""

    experiment: str
    claim: str
    verdict: Verdict
    summary: str
    observed: dict[str, Any] = field(default_factory=dict)
    trace: list[str] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)
    #: what the kernel's rules predict for this run's settings: never observations
    expected: dict[str, Any] = field(default_factory=dict)
    #: the settings and routes the run was made under (namespaces the experiment made)
    context: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdict"] = self.verdict.value
        return data


def judge_parts(
    experiment: str,
    claim: str,
    parts: Sequence[Part],
    observed: dict[str, Any],
    *,
    trace: list[str] | None = None,
    expected: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
) -> ClaimResult:
    """A result whose verdict and summary are derived from its parts."""
    return ClaimResult(
        experiment=experiment,
        claim=claim,
        verdict=derive_verdict(parts),
        summary=parts_summary(parts),
        observed=observed,
        trace=list(trace or []),
        parts=list(parts),
        expected=dict(expected or {}),
        context=dict(context or {}),
    )


def judge(
    experiment: str,
    claim: str,
    holds: bool,
    observed: dict[str, Any],
    *,
    confirmed: str,
    differs: str,
    trace: list[str] | None = None,
) -> ClaimResult:
    """A claim judged as one part: `holds` must be computed, not typed."""
    summary = confirmed if holds else differs
    part = Part(TEXTS.get(claim, claim), holds, summary)
    return ClaimResult(
        experiment=experiment,
        claim=claim,
        verdict=Verdict.CONFIRMED if holds else Verdict.DIFFERS,
        summary=summary,
        observed=observed,
        trace=list(trace or []),
        parts=[part],
    )


def skipped(experiment: str, claim: str, why: str) -> ClaimResult:
    return ClaimResult(experiment, claim, Verdict.SKIPPED, why)
