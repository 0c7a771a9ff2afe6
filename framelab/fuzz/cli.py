"""`framelab fuzz`: coverage-guided fuzzing of the decoder and the message layer.

    framelab fuzz --seconds 60            # one summary line; nothing left behind
    framelab fuzz --runs 100000 --verbose # libFuzzer's own output, as it goes
    framelab fuzz --corpus corpus/        # keep what the fuzzer learnt between runs

libFuzzer needs a process of its own (it exits when done), so the target
(framelab.fuzz.target) runs in a child whose output is kept in a scratch
directory and read afterwards: a clean run prints one line (inputs, rate,
coverage, corpus), a finding prints the exception and where its input was
saved. The scratch directory holds the corpus (unless --corpus names one)
and is removed at the end, also on Ctrl-C or SIGTERM; --artifacts is created
only when there is a crashing input to keep. Exit status: 0 nothing found,
1 a finding, 2 a usage mistake or atheris missing, 130/143 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from framelab.common.argtypes import positive_int, positive_size
from framelab.common.words import plural

FUZZ_EXTRA = "pip install 'framelab[fuzz]'"
#: how long the child may take to stop after SIGTERM before it is killed
STOP_GRACE = 5.0
UNITS = re.compile(r"^stat::number_of_executed_units:\s*(\d+)", re.MULTILINE)
DONE_RUNS = re.compile(r"^Done (\d+) runs in (\d+) second", re.MULTILINE)
STATUS = re.compile(r"^#\d+\s+\w+\s+cov: (\d+) ft: \d+ corp: (\d+)/", re.MULTILINE)
WRITTEN = re.compile(r"Test unit written to (\S+)")
EXCEPTION = re.compile(r"=== Uncaught Python exception: ===\n(.*?)\n\s*\n", re.DOTALL)


def configure(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--seconds", type=positive_int, default=60, metavar="SECONDS", help="how long to fuzz")
    a("--runs", type=positive_int, metavar="N", help="stop after this many inputs instead")
    a(
        "--corpus",
        type=Path,
        metavar="DIR",
        help="corpus directory, kept between runs (default: a seeded scratch one, removed)",
    )
    a(
        "--artifacts",
        type=Path,
        default=Path("fuzz-artifacts"),
        metavar="DIR",
        help="where a crashing input is saved (created only if there is one)",
    )
    a("--max-len", type=positive_size, default=100_000, metavar="BYTES", help="largest input")
    a("--verbose", action="store_true", help="show libFuzzer's own output as it runs")


@dataclass
class Outcome:
    """What the fuzzing process's output says happened."""

    exit_code: int
    runs: int | None
    seconds: float  # wall time of the fuzzing process
    coverage: int | None
    corpus: int | None
    exception: str | None
    crash_inputs: list[Path]


def _last_int(pattern: re.Pattern[str], text: str, group: int = 1) -> int | None:
    found = pattern.findall(text)
    if not found:
        return None
    last = found[-1]
    return int(last[group - 1] if isinstance(last, tuple) else last)


def read_outcome(exit_code: int, log: str, artifacts: Path, seconds: float) -> Outcome:
    exception = EXCEPTION.search(log)
    return Outcome(
        exit_code=exit_code,
        runs=_last_int(UNITS, log) or _last_int(DONE_RUNS, log),
        seconds=seconds,
        coverage=_last_int(STATUS, log),
        corpus=_last_int(STATUS, log, 2),
        exception=exception.group(1).strip() if exception else None,
        crash_inputs=sorted(artifacts.iterdir()) if artifacts.is_dir() else [],
    )


def summary(outcome: Outcome) -> str:
    """`fuzzed 60.2 s: 68,000 inputs (1,130/s), coverage 132 edges, corpus 49 inputs`"""
    runs = outcome.runs or 0
    rate = runs / outcome.seconds if outcome.seconds > 0 else 0.0
    parts = [f"fuzzed {outcome.seconds:.1f} s: {plural(runs, 'input')} ({rate:,.0f}/s)"]
    if outcome.coverage is not None:
        parts.append(f"coverage {plural(outcome.coverage, 'edge')}")
    if outcome.corpus is not None:
        parts.append(f"corpus {plural(outcome.corpus, 'input')}")
    return ", ".join(parts)


def _seed(corpus: Path) -> None:
    from framelab.fuzz.target import seeds

    corpus.mkdir(parents=True, exist_ok=True)
    if not any(corpus.iterdir()):
        for i, seed in enumerate(seeds()):
            (corpus / f"seed-{i:02d}").write_bytes(seed)


def libfuzzer_arguments(args: argparse.Namespace, corpus: Path, artifacts: Path) -> list[str]:
    flags = [
        f"-max_total_time={args.seconds}",
        f"-max_len={args.max_len}",
        f"-artifact_prefix={artifacts}{os.sep}",
        "-timeout=20",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
    ]
    if args.runs is not None:
        flags.append(f"-runs={args.runs}")
    return [*flags, str(corpus)]


class Stopped(Exception):
    """SIGTERM or SIGHUP reached us: stop the child, clean up, exit 128 + signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum: int, _frame: FrameType | None) -> None:
    raise Stopped(signum)


def _stop(child: subprocess.Popen[bytes]) -> int:
    with contextlib.suppress(ProcessLookupError):
        child.terminate()
    try:
        return child.wait(STOP_GRACE)
    except subprocess.TimeoutExpired:
        child.kill()
        return child.wait()


def fuzz(args: argparse.Namespace, scratch: Path) -> tuple[int, Outcome]:
    """Run the child with its output in `scratch`; (our exit status, outcome)."""
    corpus = args.corpus or scratch / "corpus"
    _seed(corpus)
    found = scratch / "artifacts"
    found.mkdir()
    command = [sys.executable, "-m", "framelab.fuzz.target"]
    command += libfuzzer_arguments(args, corpus, found)
    log_path = scratch / "libfuzzer.log"
    interrupted = 0
    started = time.monotonic()
    with open(log_path, "wb") as log:
        output = None if args.verbose else log
        child = subprocess.Popen(command, stdout=output, stderr=output)
        try:
            code = child.wait()
        except KeyboardInterrupt:
            interrupted, code = 130, _stop(child)
        except Stopped as stop:
            interrupted, code = 128 + stop.signum, _stop(child)
    log_text = log_path.read_text(errors="replace")
    outcome = read_outcome(code, log_text, found, time.monotonic() - started)
    if outcome.crash_inputs:
        args.artifacts.mkdir(parents=True, exist_ok=True)
        moved = [Path(shutil.move(str(p), args.artifacts / p.name)) for p in outcome.crash_inputs]
        outcome.crash_inputs = moved
    return interrupted or code, outcome


def report(code: int, outcome: Outcome, args: argparse.Namespace) -> int:
    if code in (130, 128 + signal.SIGTERM, 128 + signal.SIGHUP) and not outcome.crash_inputs:
        print(f"interrupted; {summary(outcome)}", file=sys.stderr)
        return code
    if code == 0 and not outcome.crash_inputs:
        print(f"{summary(outcome)}; nothing found")
        return 0
    if outcome.exception:
        print(outcome.exception, file=sys.stderr)
    saved = ", ".join(map(str, outcome.crash_inputs)) or "no input was saved"
    replay = (
        f"; replay: python -m framelab.fuzz.target {outcome.crash_inputs[0]}"
        if outcome.crash_inputs
        else ""
    )
    print(
        f"framelab fuzz: found a problem (libFuzzer exit status {outcome.exit_code}): "
        f"{saved}{replay}",
        file=sys.stderr,
    )
    return 1


def run(args: argparse.Namespace) -> int:
    try:
        import atheris  # noqa: F401
    except ImportError:
        print(
            f"framelab fuzz: needs atheris, which is not installed: {FUZZ_EXTRA}", file=sys.stderr
        )
        return 2
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        with tempfile.TemporaryDirectory(prefix="framelab-fuzz-") as scratch:
            if not args.verbose:
                limit = f"{args.runs:,} inputs or " if args.runs else ""
                print(
                    f"fuzzing the decoder and the message layer ({limit}{args.seconds} s)...",
                    file=sys.stderr,
                )
            code, outcome = fuzz(args, Path(scratch))
    except Stopped as stop:  # between the child's end and the summary
        return 128 + stop.signum
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return report(code, outcome, args)
