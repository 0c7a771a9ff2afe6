"""Instructions per message, per server: the figure a noisy machine repeats.

Seconds on a shared 2-core machine move with whatever else runs; the number
of instructions a server executes per message does not. Each server runs
under `valgrind --tool=callgrind` (perf's hardware counters are often not
available in a VM); after a warm-up load its counters are zeroed with
`callgrind_control -z`, the measured load runs (the same load generator as
the benchmark, gRPC with its own client), then `callgrind_control -e`
reads the totals of every thread. Instructions / messages echoed in that
load (every byte the client checked / reply size) is the result: user-space
instructions only (the kernel's share is not counted), connection set-up
included (amortised over thousands of messages).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass

from framelab.benchmarks.grid import Case
from framelab.benchmarks.loadgen import LoadSpec, Tape
from framelab.benchmarks.runner import run_loadgen
from framelab.benchmarks.targets import Target

VALGRIND = ("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null")
_THREAD_TOTAL = re.compile(r"^\s*Th\s+\d+\s+([\d,]+)\s*$", re.MULTILINE)
#: valgrind runs a Python server some 50x slower: it needs longer to start
START_TIMEOUT = 180.0


@dataclass
class InstructionCount:
    target: str
    size: int
    depth: int
    connections: int
    messages: int = 0
    instructions: int = 0
    per_message: float | None = None
    error: str | None = None


def missing_tools() -> str | None:
    """Why instructions cannot be counted here (None: they can)."""
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package valgrind)"
    return None


def _control(pid: int, *options: str) -> str:
    done = subprocess.run(
        ["callgrind_control", *options, str(pid)], capture_output=True, text=True, timeout=60
    )
    return done.stdout


def thread_totals(report: str) -> int:
    """The sum of every thread's Ir in `callgrind_control -e` output."""
    return sum(int(value.replace(",", "")) for value in _THREAD_TOTAL.findall(report))


def count(target: Target, case: Case, seconds: float = 2.0) -> InstructionCount:
    """Instructions per message of `target` in `case` (see the module doc)."""
    result = InstructionCount(target.name, case.size, case.depth, case.connections)
    why = missing_tools()
    if why is not None:
        result.error = why
        return result
    try:
        with target.server(wrapper=VALGRIND, start_timeout=START_TIMEOUT) as server:

            def load(duration: float) -> dict[str, object]:
                spec = LoadSpec(
                    server.host,
                    server.port,
                    case.size,
                    case.depth,
                    case.connections,
                    0.0,
                    duration,
                    message=target.message,
                    drain_timeout=60.0,
                )
                return run_loadgen(spec, target.client)

            warm = load(seconds / 2)
            if warm.get("error"):
                raise RuntimeError(f"warm-up: {warm['error']}")
            _control(server.pid, "-z")
            measured = load(seconds)
            totals = thread_totals(_control(server.pid, "-e"))
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        result.error = str(error)
        return result
    if measured.get("error"):
        result.error = str(measured["error"])
        return result
    checked = measured.get("checked_bytes")
    assert isinstance(checked, int)
    own_client = target.message in ("grpc", "msgpack-rpc")  # they count payload bytes
    reply = case.size if own_client else Tape(case.size, 1, target.message).reply_size
    result.messages = checked // reply
    result.instructions = totals
    if result.messages and totals:
        result.per_message = totals / result.messages
    else:
        result.error = "no messages or no instructions counted"
    return result


def count_all(targets: list[Target], cases: list[Case]) -> list[InstructionCount]:
    return [count(target, case) for case in cases for target in targets]


#: the servers and cases the README's instruction table shows
README_TARGETS = (
    "raw/uvloop",
    "framed-protocol/uvloop",
    "msgpack-protocol/uvloop",
    "msgpack-readexactly/uvloop",
    "twisted-peer",
    "grpc-aio",
    "msgpack-rpc-python",
)


def main() -> None:
    """`python -m framelab.benchmarks.instructions`: a JSON line per count
    (the README's servers, in the cases a goal is set for)."""
    from framelab.benchmarks.grid import KiB, MiB
    from framelab.benchmarks.targets import BY_NAME

    cases = [Case(64, 32, 10), Case(1 * KiB, 32, 10), Case(64 * KiB, 1, 4), Case(1 * MiB, 1, 2)]
    for counted in count_all([BY_NAME[n] for n in README_TARGETS], cases):
        print(json.dumps(asdict(counted)), flush=True)


if __name__ == "__main__":
    main()
