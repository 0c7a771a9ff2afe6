"""The README's library examples run as written (only the port is swapped for a free one)."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_the_decoder_example_runs() -> None:
    decoder_example = python_blocks()[0]
    assert "FrameDecoder" in decoder_example
    exec(compile(decoder_example, "README.md", "exec"), {})  # its own assert checks the frames


def test_the_server_and_client_examples_talk_to_each_other() -> None:
    blocks = python_blocks()
    [server_code] = [b for b in blocks if "create_server" in b]
    [client_code] = [b for b in blocks if "open_framed_connection" in b]
    port = str(free_port())
    server = subprocess.Popen(
        [sys.executable, "-c", server_code.replace("7000", port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline() == f"listening on 127.0.0.1:{port}\n"
        client = subprocess.run(
            [sys.executable, "-c", client_code.replace("7000", port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert client.returncode == 0, client.stderr
        assert client.stdout == "b'ping'\n"
    finally:
        server.kill()
        server.communicate(timeout=10)
