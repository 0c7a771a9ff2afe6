"""The per-read cost breakdown (framelab.benchmarks.read_path): every stage
runs, echoes what it read, and counts instructions where valgrind is."""

from __future__ import annotations

import shutil

import pytest

from framelab.benchmarks.read_path import STAGES, StubTransport, _instructions, main, measure


@pytest.mark.parametrize("size", [0, 64, 1024, 30_000])
@pytest.mark.parametrize("views", [True, False], ids=["views", "copies"])
def test_every_stage_runs_and_echoes_its_read(size: int, views: bool) -> None:
    """The stages that write check their first write against the input
    (StubTransport raises otherwise), so a stage that lost or reordered a
    frame would fail here."""
    costs = measure(size, 8, views, rounds=20, instructions=False)
    assert [c.stage for c in costs] == list(STAGES)
    assert all(c.us_per_read > 0 and c.instructions_per_read is None for c in costs)


def test_the_stub_transport_refuses_a_wrong_echo() -> None:
    stub = StubTransport(b"\x00\x00\x00\x01a")
    with pytest.raises(AssertionError, match="byte for byte"):
        stub.write(b"\x00\x00\x00\x01b")
    stub = StubTransport(b"\x00\x00\x00\x01a")
    stub.write(memoryview(b"\x00\x00\x00\x01a"))
    assert stub.write is len  # checked once, then dropped in C


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--depth", "0"], "--depth and --rounds at least 1"),
        (["--size", "70000", "--depth", "1"], "large frames (from 65536): another path"),
        (["--size", "30000", "--depth", "9"], "270036 bytes: more than one read"),
    ],
)
def test_bad_arguments_are_one_line(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    mistake, usage = capsys.readouterr().err.strip().splitlines()  # the mistake, a short usage
    assert (
        mistake.startswith("python -m framelab.benchmarks.read_path: error: ") and says in mistake
    )
    assert usage.startswith("usage: python -m framelab.benchmarks.read_path [OPTIONS]")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind not installed")
def test_instructions_per_read_are_counted_and_the_layers_cost_more() -> None:
    split = _instructions("split", 64, 8, True, 300)
    protocol = _instructions("protocol", 64, 8, True, 300)
    assert split is not None and protocol is not None
    # 8 frames cut: hundreds to thousands of instructions; the whole adapter more
    assert 200 < split < protocol < 100_000
