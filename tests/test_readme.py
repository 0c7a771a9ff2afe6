"""The README's code, as a reader would copy it.

- Every ```python block runs, as written, in a process of its own with a
  timeout. Blocks that serve (they call `serve_forever`) are started first
  and must be listening; the other blocks then run against them and must
  exit 0. Without a serving block, a real `framelab serve` stands in. The
  README's example port 7000 is swapped for a free one, so parallel runs on
  one machine cannot collide; nothing else is changed.
- Every `framelab ...` line of a ```sh block (also `python3 dev.py framelab
  ...`) parses with the real command line: options, values and types.
A block opts out with a first line `# readme-test: skip (why)`, only for
commands that need infrastructure the tests cannot provide; say why.
"""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from framelab.cli import build_parser

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
SKIP = "# readme-test: skip"
EXAMPLE_PORT = "7000"
BLOCK_TIMEOUT = 30.0
LISTEN_TIMEOUT = 15.0
#: how a command line is written in the README, and what to strip to get framelab's argv
COMMAND_PREFIXES = ("python3 dev.py framelab ", ".venv/bin/framelab ", "framelab ")


def blocks(language: str) -> list[str]:
    found = [body for lang, body in FENCE.findall(README.read_text()) if lang == language]
    return [body for body in found if not body.lstrip().startswith(SKIP)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def wait_until_listening(port: int, process: subprocess.Popen[str]) -> None:
    """Connect until it works (the server gives no other sign of being ready)."""
    deadline = time.monotonic() + LISTEN_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _, err = process.communicate()
            pytest.fail(f"a serving block exited with {process.returncode}: {err[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"nothing listened on port {port} within {LISTEN_TIMEOUT} s")


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[int, list[str]]]:
    """The README's serving blocks, running on one free port: (port, other blocks)."""
    port = str(free_port())
    python = [body.replace(EXAMPLE_PORT, port) for body in blocks("python")]
    serving = [body for body in python if "serve_forever" in body]
    commands = [[sys.executable, "-c", body] for body in serving]
    if not serving:
        commands = [[sys.executable, "-m", "framelab", "serve", "--port", port]]
    running = [
        subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        for c in commands
    ]
    try:
        for process in running:
            wait_until_listening(int(port), process)
        yield int(port), [body for body in python if body not in serving]
        for process in running:
            assert process.poll() is None, "a serving block stopped while it was used"
    finally:
        for process in running:
            process.terminate()
            process.communicate(timeout=BLOCK_TIMEOUT)


def test_the_readme_has_python_blocks_and_command_lines() -> None:
    assert len(blocks("python")) >= 3
    assert len(command_lines()) >= 10


def test_every_python_block_runs_as_written(servers: tuple[int, list[str]], tmp_path: Path) -> None:
    _, others = servers
    for body in others:
        done = subprocess.run(
            [sys.executable, "-c", body],
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
            cwd=tmp_path,
        )
        assert done.returncode == 0, f"{body}\n--- stderr:\n{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr


def test_the_client_block_gets_its_echo(servers: tuple[int, list[str]], tmp_path: Path) -> None:
    _, others = servers
    clients = [body for body in others if "open_framed_connection" in body]
    assert clients, "the README shows a client"
    done = subprocess.run(
        [sys.executable, "-c", clients[0]], capture_output=True, text=True, timeout=BLOCK_TIMEOUT
    )
    assert done.stdout.strip() == "b'ping'", done.stderr[-2000:]


def command_lines() -> list[str]:
    lines = []
    for body in blocks("sh"):
        for line in body.splitlines():
            text = line.strip()
            if text.startswith(COMMAND_PREFIXES) and not text.startswith("framelab/"):
                lines.append(text)
    return lines


@pytest.mark.parametrize("line", command_lines())
def test_every_command_line_parses(line: str) -> None:
    argv = shlex.split(line, comments=True)
    for prefix in COMMAND_PREFIXES:
        words = prefix.split()
        if argv[: len(words)] == words:
            argv = argv[len(words) :]
            break
    _, parsers = build_parser(argv[0])
    try:
        parsers[argv[0]].parse_args(argv[1:])
    except SystemExit as exit_status:
        pytest.fail(f"{line!r} does not parse (exit status {exit_status.code})")
