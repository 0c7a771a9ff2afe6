"""Every subcommand, driven with the mistakes a new user makes.

The rule: a mistake gets at most two lines on stderr (the mistake, naming the
offending value, then a short usage line), exit status 2 for a usage mistake
or 1 for a runtime failure (a port in use, no server there), and never a
traceback. The command line runs in this process (argparse exits through
SystemExit), except where the process itself is the point.
"""

from __future__ import annotations

import argparse
import errno
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from framelab.cli import SUBCOMMANDS, build_parser, main
from framelab.servers.config import ServerConfig
from framelab.servers.runner import BackgroundServer

Capture = pytest.CaptureFixture[str]


def run_cli(argv: list[str], capture: Capture) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `framelab ARGV`, in this process."""
    try:
        code = main(argv)
    except SystemExit as exit_status:
        code = int(exit_status.code or 0)
    captured = capture.readouterr()
    return code, captured.out, captured.err


def assert_one_clear_line(err: str, *named: str) -> None:
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 2, err
    assert "Traceback" not in err
    for text in named:
        assert text in lines[0], (text, err)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port with a listener on it (no SO_REUSEPORT: nobody can share it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on (bound and released: connect() is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# (argv, what the error line must name); every one is a usage mistake: exit 2
USAGE_MISTAKES = [
    (["serve", "--port", "70000"], "70000"),
    (["serve", "--port", "-5"], "-5"),
    (["serve", "--port", "http"], "'http'"),
    (["serve", "--max-frame", "-1"], "-1"),
    (["serve", "--max-frame", "0"], "--max-frame: 0"),
    (["serve", "--workers", "-2"], "-2"),
    (["serve", "--max-connections", "0"], "--max-connections: 0"),
    (["serve", "--high-water", "0"], "--high-water: 0"),
    (["serve", "--high-water", "-5"], "-5"),
    (["serve", "--backlog", "-1"], "--backlog: -1"),
    (["serve", "--frame-timeout", "-1"], "--frame-timeout"),
    (["serve", "--linger", "-1"], "--linger: -1"),
    (["serve", "--shutdown-timeout", "-1"], "--shutdown-timeout: -1"),
    (["serve", "--shutdown-timeout", "nan"], "'nan'"),
    (["serve", "--mode", "msgpack", "--max-frame", "100"], "--max-frame"),
    (["serve", "--host", "not a host"], "'not a host'"),
    (["serve", "--bogus"], "--bogus"),
    (["send", "--port", "70000", "hi"], "70000"),
    (["send", "--port", "7000", "--timeout", "-1", "hi"], "--timeout: -1"),
    (["send", "--port", "7000", "--timeout", "0", "hi"], "--timeout: 0"),
    (["send", "--port", "7000", "--max-frame", "0", "hi"], "--max-frame: 0"),
    (["send", "hi"], "--port"),
    (["send", "--port", "7000"], "nothing to send"),
    (["send", "--port", "7000", "--op", "sum"], "--op"),
    (["soak", "--connect", "garbage"], "'garbage'"),
    (["soak", "--connect", "127.0.0.1:99999"], "99999"),
    (["soak", "--connections", "0"], "--connections: 0"),
    (["soak", "--seconds", "-1"], "--seconds: -1"),
    (["soak", "--depth", "0"], "--depth: 0"),
    (["soak", "--max-size", "lots"], "'lots'"),
    (["demo", "--experiments", "bogus"], "experiment(s): bogus"),
    (["bench", "--rounds", "0"], "--rounds: 0"),
    (["bench", "--duration", "-1"], "--duration: -1"),
    (["bench", "--warmup", "-1"], "--warmup: -1"),
    (["bench", "--plot", "chart.png"], "'chart.png'"),
    (["bench", "--cases", "64/0/1"], "64/0/1"),
    (["bench", "--targets", "nosuch"], "nosuch"),
    (["fuzz", "--seconds", "0"], "--seconds: 0"),
    (["fuzz", "--seconds", "-1"], "--seconds: -1"),
    (["fuzz", "--runs", "0"], "--runs: 0"),
    (["sticky", "--messages", "0"], "--messages: 0"),
    (["cluster", "--servers", "0"], "--servers: 0 must be 1..20"),
    (["cluster", "--seconds", "500"], "--seconds: 500"),
    (["cluster", "--event-at", "1.5"], "--event-at: 1.5"),
    (["cluster", "--check-inter", "-1"], "--check-inter: -1"),
    (["cluster", "--victim", "5"], "--victim must be 1..3"),
    (["sticky", "--size", "-3"], "-3"),
    (["sticky", "--plot", "sticky.png"], "'sticky.png'"),
    (["experiment", "run", "sticky", "--rounds", "0"], "--rounds: 0"),
    (["experiment", "run", "bogus"], "bogus"),
    (["experiment", "run", "sticky", "--plot", "x.svg"], "'x.svg'"),
]


@pytest.mark.parametrize(
    ("argv", "named"), USAGE_MISTAKES, ids=[" ".join(a) for a, _ in USAGE_MISTAKES]
)
def test_a_usage_mistake_is_one_line_naming_it_and_exit_2(
    argv: list[str], named: str, capsys: Capture
) -> None:
    code, _, err = run_cli(argv, capsys)
    assert code == 2, err
    assert_one_clear_line(err, named)


def test_an_unknown_option_shows_the_subcommands_usage(capsys: Capture) -> None:
    code, _, err = run_cli(["send", "--port", "1", "--bogus", "hi"], capsys)
    assert code == 2
    assert_one_clear_line(err, "framelab send", "--bogus")
    assert err.splitlines()[1].startswith("usage: framelab send ")
    code, _, err = run_cli(["experiment", "run", "sticky", "--bogus"], capsys)
    assert code == 2
    assert_one_clear_line(err, "framelab experiment run: error: unrecognized arguments: --bogus")


def test_an_unknown_host_is_named_without_asking_the_network(
    monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    """The resolver is replaced: this machine's DNS server is not on loopback."""

    def unknown(*_: object, **__: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unknown)
    for argv in (["serve", "--host", "nosuch.invalid"], ["send", "--host", "nosuch.invalid"]):
        code, _, err = run_cli([*argv, "--port", "7000", "hi"][: len(argv) + 2], capsys)
        assert code == 2
        assert_one_clear_line(err, "unknown host 'nosuch.invalid'", "not known")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_on_a_taken_port_says_so_in_one_line(
    workers: str, taken_port: int, capfd: Capture
) -> None:
    """capfd: the server logs through the stderr descriptor itself."""
    code, _, err = run_cli(["serve", "--port", str(taken_port), "--workers", workers], capfd)
    assert code == 1
    assert err.strip() == (
        f"framelab serve: cannot listen on 127.0.0.1:{taken_port}: address already in use "
        "(EADDRINUSE); is another server running?"
    )


def test_serve_on_an_address_not_on_this_machine(
    monkeypatch: pytest.MonkeyPatch, capfd: Capture
) -> None:
    """bind() is made to fail as it does for a foreign address (no such
    address is used: every test stays on loopback)."""

    def not_here(self: socket.socket, address: object) -> None:
        raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")

    monkeypatch.setattr(socket.socket, "bind", not_here)
    code, _, err = run_cli(["serve", "--host", "127.0.0.2", "--port", "7000"], capfd)
    assert code == 1
    assert_one_clear_line(err, "cannot listen on 127.0.0.2:7000", "(EADDRNOTAVAIL)")


def test_soak_without_a_server_is_one_line(closed_port: int, capsys: Capture) -> None:
    code, _, err = run_cli(["soak", "--connect", f"127.0.0.1:{closed_port}"], capsys)
    assert code == 1
    assert_one_clear_line(err, f"127.0.0.1:{closed_port}", "(ECONNREFUSED)")


def test_send_without_a_server_is_one_line(closed_port: int, capsys: Capture) -> None:
    code, _, err = run_cli(["send", "--port", str(closed_port), "hi"], capsys)
    assert code == 1
    assert_one_clear_line(err, f"127.0.0.1:{closed_port}", "(ECONNREFUSED)")


def test_a_framed_send_to_a_msgpack_server_says_use_msgpack(capsys: Capture) -> None:
    with BackgroundServer(ServerConfig(mode="msgpack")) as server:
        code, out, err = run_cli(["send", "--port", str(server.port), "hello"], capsys)
    assert code == 1
    assert out == ""  # no mojibake
    assert_one_clear_line(err, "the reply is msgpack: use --mode msgpack")


def test_ipv6_addresses_are_written_in_brackets(closed_port: int, capsys: Capture) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    code, _, err = run_cli(["send", "--host", "::1", "--port", str(closed_port), "hi"], capsys)
    assert code == 1
    assert f"[::1]:{closed_port}" in err


def test_version_and_help_show_defaults(capsys: Capture) -> None:
    code, out, _ = run_cli(["--version"], capsys)
    assert code == 0 and out.startswith("framelab ")
    code, out, _ = run_cli(["serve", "--help"], capsys)
    assert code == 0
    assert "(default: 8388608)" in out and "(default: 127.0.0.1)" in out


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_every_option_has_help_and_a_metavar_in_capitals(name: str) -> None:
    _, parsers = build_parser(name)
    actions = list(parsers[name]._actions)
    for action in list(actions):  # `experiment` has subcommands of its own
        if isinstance(action, argparse._SubParsersAction):
            for nested in action.choices.values():
                actions += nested._actions
    for action in actions:
        if action.dest == "help" or not action.option_strings:
            continue
        assert action.help, f"{name} {action.option_strings} has no help"
        if action.metavar is not None:
            assert str(action.metavar).upper() == action.metavar, (name, action.metavar)


def test_experiment_run_help_shows_no_module_notes(capsys: Capture) -> None:
    code, out, _ = run_cli(["experiment", "run", "--help"], capsys)
    assert code == 0
    assert "run_experiments()" not in out and "registry" not in out


def test_the_real_process_prints_no_traceback(taken_port: int) -> None:
    """One mistake through an actual `python -m framelab`, start to exit."""
    done = subprocess.run(
        [sys.executable, "-m", "framelab", "serve", "--port", str(taken_port)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert_one_clear_line(done.stderr, "(EADDRINUSE)")
