"""`framelab serve --config FILE`: the file's keys and mistakes, the command
line over the file, and SIGHUP: a valid file's new settings reach new
connections with none failing meanwhile; an invalid one changes nothing."""

from __future__ import annotations

import signal
import struct
from pathlib import Path

import pytest

from framelab.cli import main
from framelab.servers.config_file import ConfigError, ConfigSource, read_config_file
from framelab.servers.process import ServerProcess
from framing import encode_frame

from .support import Stream, connect, echo_works, msgpack_echo_works, read_to_end

BIG = bytes(100 * 1024)  # over a 64 KiB limit, under a 1 MiB one


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "serve.toml"
    path.write_text(text)
    return path


def test_a_file_sets_options_by_their_long_names_with_dashes_or_underscores(
    tmp_path: Path,
) -> None:
    path = _file(
        tmp_path,
        'mode = "msgpack"\nmax_frame = "64K"\nframe-timeout = 2.5\nnodelay = false\n'
        "quiet = true\nbacklog = 7\n",
    )
    config = ConfigSource(path).load()
    assert (config.mode, config.max_frame, config.frame_timeout) == ("msgpack", 65536, 2.5)
    assert (config.nodelay, config.log_reads, config.backlog) == (False, False, 7)
    assert config.io == "protocol", "what the file leaves out is the default"


def test_options_given_on_the_command_line_override_the_file(tmp_path: Path) -> None:
    path = _file(tmp_path, 'max_frame = "64K"\nbacklog = 7\nframe_timeout = 3\n')
    config = ConfigSource(path, {"backlog": 0, "frame_timeout": 0}).load()
    assert config.max_frame == 65536  # from the file
    assert config.backlog == 0, "an explicit --backlog 0 beats the file"
    assert config.frame_timeout is None, "--frame-timeout 0: no limit, as on the command line"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("max_frames = 1\n", "unknown key 'max_frames' (did you mean max_frame?)"),
        ('max_frame = "8X"\n', "max_frame: '8X' is not a size in bytes"),
        ("port = 70000\n", "port: 70000 is not a port (0-65535)"),
        ('mode = "json"\n', "mode: 'json' is not one of raw, framed, msgpack"),
        ('nodelay = "yes"\n', "nodelay: 'yes' is not true or false"),
        ("backlog = true\n", "backlog: True is not a single value"),
        ("max_frame = [1, 2]\n", "max_frame: [1, 2] is not a single value"),
        ("backlog = 1\nbacklog = 2\n", "not valid TOML"),
        ("max-frame = 1\nmax_frame = 2\n", "'max_frame' is given twice"),
    ],
)
def test_a_wrong_file_is_one_error_naming_the_file_the_key_and_the_problem(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = _file(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        read_config_file(path)
    assert str(raised.value).startswith(f"{path}: ")
    assert problem in str(raised.value)


def test_a_combination_the_server_refuses_names_the_file(tmp_path: Path) -> None:
    path = _file(tmp_path, 'mode = "msgpack"\nmax_frame = 100\n')
    with pytest.raises(ConfigError, match=r"serve\.toml: --max-frame must be at least 512"):
        ConfigSource(path).load()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('max_frame = "8X"\n', "serve.toml: max_frame: '8X' is not a size"),
        (None, "serve.toml: cannot read it: No such file or directory"),
    ],
)
def test_serve_with_a_wrong_file_says_so_in_one_line_and_exits_2(
    tmp_path: Path, text: str | None, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _file(tmp_path, text) if text is not None else tmp_path / "serve.toml"
    assert main(["serve", "--config", str(path)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("framelab serve: error: ") and problem in line


def _refused_unanswered(address: tuple[str, int], payload: bytes) -> bool:
    """Whether a frame is dropped unanswered (framed mode says nothing on errors)."""
    with connect(address) as sock:
        sock.sendall(encode_frame(payload))
        return read_to_end(sock).data == b""


def _cut_off_within(address: tuple[str, int], seconds: float) -> bool:
    """Whether half a frame gets the connection closed within `seconds`."""
    with connect(address, timeout=seconds) as sock:
        sock.sendall(struct.pack(">I", 100) + b"half")
        try:
            return read_to_end(sock).data == b""
        except TimeoutError:
            return False


def _sighup(server: ServerProcess, waiting_for: str) -> str:
    mark = len(server.log)
    server.send_signal(signal.SIGHUP)
    return server.wait_for_log(waiting_for, timeout=30, start=mark)


def test_sighup_starts_workers_with_the_edited_file_and_no_connection_fails(
    tmp_path: Path,
) -> None:
    path = _file(tmp_path, 'max_frame = "64K"\nframe_timeout = 30\nworkers = 2\n')
    with ServerProcess(["--config", str(path)]) as server:
        before = set(server.worker_pids())
        assert _refused_unanswered(server.address, BIG), "over the file's 64 KiB limit"
        path.write_text('max_frame = "1M"\nframe_timeout = 0.3\nworkers = 2\n')
        with Stream(server.address) as stream:
            stream.wait_for(10)
            line = _sighup(server, "SIGHUP: config reloaded")
            server.wait_for_log("rolling restart done", timeout=30, start=server.log.index(line))
            stream.wait_for(stream.attempts + 20)  # a few more, to the new workers only
        assert stream.failures == []
        assert "max_frame 65536 -> 1048576" in line and "frame_timeout 30.0 -> 0.3" in line
        with connect(server.address) as sock:
            assert echo_works(sock, BIG), "a new connection has the new limit"
        assert _cut_off_within(server.address, 5.0), "and the new frame timeout"
        after = set(server.wait_until_workers(lambda pids: len(pids) == 2))
        assert after.isdisjoint(before)
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0


def test_an_invalid_file_at_sighup_keeps_the_old_workers_and_their_config(
    tmp_path: Path,
) -> None:
    path = _file(tmp_path, 'mode = "framed"\nmax_frame = "64K"\n')
    with ServerProcess(["--config", str(path)]) as server:
        before = server.worker_pids()
        path.write_text('mode = "framed"\nmax_frame = "8X"\n')
        line = _sighup(server, "SIGHUP refused")
        assert f"{path}: max_frame: '8X' is not a size" in line
        assert server.worker_pids() == before, "nothing restarted"
        with connect(server.address) as sock:
            assert echo_works(sock)
        assert _refused_unanswered(server.address, BIG), "still the old 64 KiB limit"
        # a setting of the listener is kept as it is; the rest applies
        path.write_text('mode = "msgpack"\nmax_frame = "64K"\nbacklog = 7\n')
        warning = _sighup(server, "needs a full restart")
        assert "backlog 128 -> 7" in warning
        server.wait_for_log("rolling restart done", timeout=30, start=server.log.index(warning))
        with connect(server.address) as sock:
            assert msgpack_echo_works(sock), "new connections get the new mode, same port"
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0
