"""What an experiment reports: one ClaimResult per claim, verdict computed.

A verdict is never written in: `judge()` takes the observed outcome and turns
it into `confirmed` or `differs`, so a kernel that behaves differently changes
the report, not the code.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any


class Verdict(enum.StrEnum):
    CONFIRMED = "confirmed"
    DIFFERS = "differs"
    SKIPPED = "skipped"


@dataclass
class ClaimResult:
    """The outcome for one claim (experiments/claims.py): verdict, evidence, one sentence."""

    experiment: str
    claim: str
    verdict: Verdict
    summary: str
    observed: dict[str, Any] = field(default_factory=dict)
    trace: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdict"] = self.verdict.value
        return data


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
    """Turn an observation into a verdict: `holds` must be computed, not typed."""
    return ClaimResult(
        experiment=experiment,
        claim=claim,
        verdict=Verdict.CONFIRMED if holds else Verdict.DIFFERS,
        summary=confirmed if holds else differs,
        observed=observed,
        trace=list(trace or []),
    )


def skipped(experiment: str, claim: str, why: str) -> ClaimResult:
    return ClaimResult(experiment, claim, Verdict.SKIPPED, why)
