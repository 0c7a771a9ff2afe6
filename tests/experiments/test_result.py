"""Verdicts derived from parts: a part that was not observed never counts as passing."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from framelab.experiments.result import Part, Verdict, derive_verdict, judge, judge_parts


def parts(*holds: bool | None) -> list[Part]:
    return [Part(f"part {i}", h, f"evidence {i}") for i, h in enumerate(holds)]


def test_all_parts_hold_is_confirmed() -> None:
    assert derive_verdict(parts(True, True)) is Verdict.CONFIRMED


def test_some_parts_hold_is_partly() -> None:
    assert derive_verdict(parts(True, False)) is Verdict.PARTLY


def test_an_unobserved_part_keeps_a_claim_from_being_confirmed() -> None:
    assert derive_verdict(parts(True, None)) is Verdict.PARTLY


def test_no_part_holds_is_differs() -> None:
    assert derive_verdict(parts(False, None)) is Verdict.DIFFERS


def test_nothing_observed_is_skipped() -> None:
    assert derive_verdict(parts(None, None)) is Verdict.SKIPPED
    assert derive_verdict([]) is Verdict.SKIPPED


@given(st.lists(st.sampled_from([True, False, None]), min_size=1, max_size=6))
def test_confirmed_exactly_when_every_part_holds(holds: list[bool | None]) -> None:
    verdict = derive_verdict(parts(*holds))
    assert (verdict is Verdict.CONFIRMED) == all(h is True for h in holds)
    assert (verdict is Verdict.SKIPPED) == all(h is None for h in holds)


def test_summary_names_every_part_by_what_happened() -> None:
    result = judge_parts("x", "C40", parts(True, False, None), {})
    assert result.summary.startswith("holds: part 0 (evidence 0)")
    assert "fails: part 1 (evidence 1)" in result.summary
    assert "not observed: part 2 (evidence 2)" in result.summary


def test_one_part_judge_keeps_its_sentence_and_records_the_part() -> None:
    result = judge("x", "C01", False, {}, confirmed="yes", differs="no, saw 9000")
    assert result.verdict is Verdict.DIFFERS and result.summary == "no, saw 9000"
    assert [(p.holds, p.evidence) for p in result.parts] == [(False, "no, saw 9000")]
