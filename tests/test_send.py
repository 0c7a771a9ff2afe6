"""`framelab send` against in-process servers, through the real command line."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability.support import close_with_reset

from framelab.cli import main
from framelab.servers.config import ServerConfig
from framelab.servers.runner import BackgroundServer

Capture = pytest.CaptureFixture[str]


@pytest.fixture(scope="module")
def framed() -> Iterator[BackgroundServer]:
    with BackgroundServer(ServerConfig(mode="framed")) as srv:
        yield srv


@pytest.fixture(scope="module")
def msgpack_server() -> Iterator[BackgroundServer]:
    with BackgroundServer(ServerConfig(mode="msgpack", max_frame=1000)) as srv:
        yield srv


def send(*argv: str | int) -> int:
    return main(["send", *map(str, argv)])


def test_framed_text_messages_come_back_one_per_line(
    framed: BackgroundServer, capsys: Capture
) -> None:
    assert send("--port", framed.port, "hello", "wörld", "") == 0
    assert capsys.readouterr().out == "hello\nwörld\n\n"


def test_framed_hex_and_file(framed: BackgroundServer, tmp_path: Path, capsys: Capture) -> None:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"\x00\xffbin")
    assert send("--port", framed.port, "--hex", "00ff", "de ad", f"@{blob}") == 0
    assert capsys.readouterr().out.split() == ["00ff", "dead", "00ff62696e"]


def test_msgpack_op_and_args(msgpack_server: BackgroundServer, capsys: Capture) -> None:
    code = send(
        "--port", msgpack_server.port, "--mode", "msgpack", "--op", "sum", "--args", "[1,2]"
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out) == {"id": 0, "ok": True, "result": 3}


def test_msgpack_requests_as_json_and_error_replies(
    msgpack_server: BackgroundServer, capsys: Capture
) -> None:
    requests = ['{"op": "echo", "args": [1, "a"]}', '{"op": "launch", "id": "x"}']
    code = send("--port", msgpack_server.port, "--mode", "msgpack", *requests)
    replies = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1  # an error reply is a failure for scripts
    assert replies[0] == {"id": 0, "ok": True, "result": [1, "a"]}
    assert replies[1]["id"] == "x" and replies[1]["error"]["type"] == "unknown_op"


def test_server_closing_early_prints_what_arrived_and_says_so(
    msgpack_server: BackgroundServer, capsys: Capture
) -> None:
    """Over the server's frame limit: it answers why and closes; the next request is lost."""
    small, big = '{"op": "echo"}', json.dumps({"op": "echo", "args": "x" * 2000})
    code = send("--port", msgpack_server.port, "--mode", "msgpack", big, small)
    out, err = capsys.readouterr()
    (reply,) = [json.loads(line) for line in out.splitlines()]
    assert code == 1
    assert reply["ok"] is False and reply["error"]["type"] == "frame_too_large"
    assert "closed the connection after 1 of 2 replies" in err


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # closed and not listening: connecting is refused


def test_refused_port_names_the_errno(capsys: Capture) -> None:
    assert send("--port", _free_port(), "hi") == 1
    err = capsys.readouterr().err
    assert "connecting to 127.0.0.1:" in err and "ECONNREFUSED" in err


def test_silent_server_times_out(capsys: Capture) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts in the kernel, never answers
        assert send("--port", silent.getsockname()[1], "--timeout", "0.3", "hi") == 1
    err = capsys.readouterr().err
    assert "waiting for 1 reply from" in err and "timed out after 0.3 s" in err


def test_reset_names_the_errno(capsys: Capture) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def abort_after_first_read() -> None:
            conn, _ = listener.accept()
            conn.recv(100)
            close_with_reset(conn)

        peer = threading.Thread(target=abort_after_first_read)
        peer.start()
        code = send("--port", listener.getsockname()[1], "hi")
        peer.join(5)
    assert code == 1
    assert "ECONNRESET" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--mode", "msgpack", "--op", "echo", '{"op": "echo"}'],
        ["--mode", "msgpack", "not json"],
        ["--mode", "msgpack", "[1]"],
        ["--op", "echo"],
        ["--hex", "zz"],
        [],
    ],
)
def test_bad_arguments_exit_2_before_connecting(argv: list[str], capsys: Capture) -> None:
    assert send("--port", _free_port(), *argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("framelab send: ") and "ECONNREFUSED" not in err
