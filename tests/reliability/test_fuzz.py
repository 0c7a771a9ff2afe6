"""Property and stateful tests for the decoder and the msgpack layer, and a
short run of the coverage-guided fuzzer (`framelab fuzz`) in its own process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from framelab.fuzz import cli as fuzz_cli
from framelab.fuzz.checks import FUZZ_BUFFER_SIZE, check_decoder, check_message, reference_decode
from framelab.fuzz.target import server_application
from framelab.servers import msgpack_app
from framing import FrameDecoder, FrameTooLarge, FramingError, encode_frame, encode_frames

limits = st.sampled_from([0, 1, 16, 1000, 70_000, 8 * 1024 * 1024])
large_frames = st.sampled_from([0, 256, 4096, 64 * 1024])
#: mostly well-formed frames, with garbage, cut headers and huge headers mixed in
pieces = st.one_of(
    st.binary(max_size=3000).map(lambda p: bytes(encode_frame(p))),
    st.integers(0, 200_000).map(lambda n: bytes(encode_frame(bytes(n)))),
    st.binary(max_size=50),
    st.integers(0, 0xFFFF_FFFF).map(lambda n: n.to_bytes(4, "big")),
)
streams = st.lists(pieces, max_size=12).map(b"".join)


@given(streams, limits, large_frames, st.integers(0, 2**32), st.booleans())
@settings(deadline=None, max_examples=150)
def test_the_decoder_agrees_with_the_reference_on_any_bytes(
    stream: bytes, max_frame: int, large_frame: int, seed: int, views: bool
) -> None:
    check_decoder(stream, max_frame, large_frame=large_frame, chunk_seed=seed, views=views)


@pytest.mark.parametrize("large_frame", [0, 64 * 1024])
def test_frames_completed_before_a_bad_header_in_one_feed_come_first(large_frame: int) -> None:
    """One feed() that finishes a large frame (its own buffer) and then meets
    a bad header in the receive buffer: the frame is delivered, then the error
    (the fuzzer's first finding: the frame was lost)."""
    decoder = FrameDecoder(100_000, buffer_size=FUZZ_BUFFER_SIZE, large_frame=large_frame)
    wire = bytes(encode_frame(bytes(70_000))) + b"\xff\xff\xff\xff"
    assert decoder.feed(wire[:10]) == []
    assert [len(f) for f in decoder.feed(wire[10:])] == [70_000]
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"")


@given(st.binary(max_size=5000), st.sampled_from([msgpack_app.MIN_FRAME, 1000, 8 << 20]))
def test_any_payload_gets_exactly_one_reply(payload: bytes, max_frame: int) -> None:
    check_message(payload, server_application(max_frame), max_frame)


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=30,
)
requests = st.fixed_dictionaries(
    {"op": st.sampled_from([*msgpack_app.OPS, "nope"]) | st.text(max_size=10)},
    optional={"id": values, "args": values},
)


@given(requests, st.sampled_from([msgpack_app.MIN_FRAME, 2000, 8 << 20]))
def test_any_request_gets_exactly_one_reply(request: dict[str, Any], max_frame: int) -> None:
    check_message(msgpack.packb(request), server_application(max_frame), max_frame)


@given(values)
def test_echo_returns_its_arguments(args: Any) -> None:
    codec_reply = msgpack_app.handle_request({"op": "echo", "id": 1, "args": args})
    assert codec_reply["ok"] is True
    packed = msgpack.packb(args)
    assert msgpack.packb(codec_reply["result"]) == packed


class DecoderMachine(RuleBasedStateMachine):
    """Any sequence of inputs through either path: the frames delivered are
    always the reference's complete frames so far, memory stays bounded, and
    after an error every call raises that same error."""

    @initialize(max_frame=st.sampled_from([0, 10, 3000, 100_000]), large=large_frames)
    def start(self, max_frame: int, large: int) -> None:
        self.decoder = FrameDecoder(max_frame, buffer_size=FUZZ_BUFFER_SIZE, large_frame=large)
        self.max_frame = max_frame
        self.sent = bytearray()
        self.delivered: list[bytes] = []
        self.error: FramingError | None = None

    def _input(self, data: bytes, via_buffer: bool, chunk: int) -> None:
        view = memoryview(data)
        try:
            while view:
                if via_buffer:
                    room = self.decoder.get_buffer(chunk)
                    count = min(len(room), len(view), chunk)
                    room[:count] = view[:count]
                    self.sent += view[:count]  # handed over, whatever happens next
                    got = self.decoder.buffer_updated(count)
                else:
                    count = min(len(view), chunk)
                    self.sent += view[:count]
                    got = self.decoder.feed(view[:count])
                view = view[count:]
                self.delivered += [bytes(f) for f in got]
        except FramingError as error:
            assert self.error is None or error is self.error
            self.error = error

    @rule(
        payloads=st.lists(st.binary(max_size=4000), max_size=5),
        via_buffer=st.booleans(),
        chunk=st.integers(1, 70_000),
    )
    def send_frames(self, payloads: list[bytes], via_buffer: bool, chunk: int) -> None:
        self._input(bytes(encode_frames(payloads, max_frame_length=1 << 30)), via_buffer, chunk)

    @rule(
        data=st.binary(min_size=1, max_size=300), via_buffer=st.booleans(), chunk=st.integers(1, 8)
    )
    def send_bytes(self, data: bytes, via_buffer: bool, chunk: int) -> None:
        self._input(data, via_buffer, chunk)

    def teardown(self) -> None:
        """The end of the stream: clean only at a frame boundary."""
        try:
            self.decoder.end_of_stream()
        except FramingError as error:
            self.error = error
        _, expected = reference_decode(bytes(self.sent), self.max_frame)
        assert type(self.error) is (expected or type(None))

    @invariant()
    def delivered_what_the_reference_completed(self) -> None:
        frames, expected_error = reference_decode(bytes(self.sent), self.max_frame)
        assert self.delivered == frames
        if self.error is not None:
            assert isinstance(self.error, expected_error or type(None))

    @invariant()
    def memory_is_bounded(self) -> None:
        assert self.decoder.buffered <= FUZZ_BUFFER_SIZE + self.max_frame

    @invariant()
    def an_error_sticks(self) -> None:
        failed = self.decoder.failed
        if failed is not None:
            with pytest.raises(type(failed)):
                self.decoder.feed(b"\x00")
            if self.error is not None:
                assert failed is self.error


TestDecoderMachine = DecoderMachine.TestCase
TestDecoderMachine.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def fuzz_command(*argv: str) -> list[str]:
    return [sys.executable, "-m", "framelab", "fuzz", *argv]


def scratch_env(tmp_path: Path) -> dict[str, str]:
    """The environment with a private temp directory, to see what is left in it."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    return {**os.environ, "TMPDIR": str(temp)}


def test_the_fuzzer_runs_for_a_few_seconds_and_finds_nothing(tmp_path: Path) -> None:
    """`framelab fuzz` starts libFuzzer in a child process; a short run ends
    cleanly with one summary line, having executed inputs, and leaves no
    artifacts directory and no scratch corpus behind."""
    pytest.importorskip("atheris")
    env = scratch_env(tmp_path)
    corpus = tmp_path / "corpus"
    done = subprocess.run(
        fuzz_command("--seconds", "2", "--corpus", str(corpus)),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith("nothing found"), done.stdout
    runs = re.search(r"fuzzed [\d.]+ s: ([\d,]+) inputs", lines[0])
    assert runs is not None and int(runs.group(1).replace(",", "")) > 50, lines[0]
    assert len(done.stderr.strip().splitlines()) == 1  # "fuzzing ... (2 s)...", no libFuzzer log
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "tmp"]  # no fuzz-artifacts
    assert not list(Path(env["TMPDIR"]).iterdir())
    assert len(list(corpus.iterdir())) > 10  # seeded, and grown


def test_a_stopped_fuzz_run_leaves_nothing_behind(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    env = scratch_env(tmp_path)
    fuzzing = subprocess.Popen(
        fuzz_command("--seconds", "60"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert fuzzing.stderr is not None
    assert "fuzzing" in fuzzing.stderr.readline()  # started: the scratch directory exists
    fuzzing.send_signal(signal.SIGTERM)
    _, err = fuzzing.communicate(timeout=30)
    assert fuzzing.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in err
    assert not list(Path(env["TMPDIR"]).iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]


def test_without_atheris_one_line_says_what_to_install() -> None:
    script = (
        "import sys; sys.modules['atheris'] = None; from framelab.cli import main; "
        "sys.exit(main(['fuzz', '--seconds', '1']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "framelab fuzz: needs atheris, which is not installed: pip install 'framelab[fuzz]'"
    ]


def test_a_finding_names_the_exception_and_the_saved_input(tmp_path: Path) -> None:
    """The report of a libFuzzer log with a crash (as atheris writes it)."""
    crash = tmp_path / "crash-11f6"
    crash.write_bytes(b"x")
    log = (
        "INFO: Seed: 1\n\n === Uncaught Python exception: ===\nValueError: boom\n"
        "Traceback (most recent call last):\n  ...\nValueError: boom\n\n"
        "==1== ERROR: libFuzzer: fuzz target exited\n"
        f"artifact_prefix='{tmp_path}/'; Test unit written to {crash}\n"
        "stat::number_of_executed_units: 2\n"
    )
    outcome = fuzz_cli.read_outcome(77, log, tmp_path, seconds=0.5)
    assert outcome.runs == 2 and outcome.crash_inputs == [crash]
    assert outcome.exception is not None and outcome.exception.startswith("ValueError: boom")
