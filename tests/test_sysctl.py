"""`framelab sysctl`: every setting the notes ask about, live values, saved runs, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from framelab.cli import main
from framelab.common import last_run
from framelab.experiments.result import ClaimResult, Verdict
from framelab.sysctl.explain import explain, live_value, lookup
from framelab.sysctl.params import BY_NAME, PARAMS

#: the settings the issue names, every one of which must be explained
REQUIRED = [
    "tcp_tw_reuse",
    "tcp_tw_reuse_delay",
    "tcp_max_tw_buckets",
    "tcp_fin_timeout",
    "tcp_timestamps",
    "somaxconn",
    "tcp_max_syn_backlog",
    "tcp_syncookies",
    "tcp_synack_retries",
    "tcp_syn_retries",
    "tcp_syn_linear_timeouts",
    "tcp_abort_on_overflow",
    "tcp_retries1",
    "tcp_retries2",
    "tcp_orphan_retries",
    "tcp_max_orphans",
    "tcp_keepalive_time",
    "tcp_keepalive_intvl",
    "tcp_keepalive_probes",
    "ip_local_port_range",
    "tcp_rmem",
    "tcp_wmem",
    "tcp_mem",
    "netdev_max_backlog",
    "tcp_mtu_probing",
    "tcp_base_mss",
    "ip_no_pmtu_disc",
    "ipfrag_time",
    "icmp_echo_ignore_all",
    "tcp_migrate_req",
    "fs.file-max",
    "fs.nr_open",
    "tcp_tw_recycle",
]


def test_every_setting_the_notes_touch_is_in_the_table() -> None:
    missing = [name for name in REQUIRED if name not in BY_NAME]
    assert missing == []
    for param in PARAMS:
        assert param.default and param.what.endswith(".")
        assert (param.experiment is None) == (param.claim is None)


def test_tw_recycle_is_marked_removed_in_4_12() -> None:
    assert BY_NAME["tcp_tw_recycle"].removed_in == "4.12"
    assert [p.name for p in PARAMS if p.removed_in] == ["net.ipv4.tcp_tw_recycle"]


def test_live_values_come_from_proc_sys() -> None:
    param = BY_NAME["somaxconn"]
    expected = " ".join(Path("/proc/sys/net/core/somaxconn").read_text().split())
    assert live_value(param) == expected
    rmem = live_value(BY_NAME["tcp_rmem"])
    assert rmem is not None and len(rmem.split(" ")) == 3  # tabs folded


def test_a_setting_this_kernel_lacks_reads_as_absent(tmp_path: Path) -> None:
    (tmp_path / "net" / "ipv4").mkdir(parents=True)
    (tmp_path / "net" / "ipv4" / "tcp_fin_timeout").write_text("7\n")
    rows = explain(["tcp_fin_timeout", "tcp_tw_reuse"], [], root=tmp_path)
    assert [r.live for r in rows] == ["7", None]


def test_lookup_follows_paths_whose_keys_contain_dots() -> None:
    observed = {"namespace": {"net.ipv4.tcp_fin_timeout": "7"}}
    assert lookup(observed, "namespace/net.ipv4.tcp_fin_timeout") == (True, "7")
    assert lookup(observed, "namespace/missing") == (False, None)
    assert lookup({"a": 1}, "a/b") == (False, None)


def saved_run() -> list[ClaimResult]:
    observed = {
        "orphaned_fin_wait2": {"length_seconds": 59.98},
        "time_wait": {"length_seconds": 60.01},
    }
    return [ClaimResult("time_wait", "C11", Verdict.CONFIRMED, "TIME_WAIT 60 s", observed)]


def test_measured_figures_come_from_the_last_saved_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert last_run.save(saved_run()) == last_run.last_run_path()
    assert main(["sysctl", "tcp_fin_timeout", "somaxconn", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)  # pure JSON: nothing else on stdout
    fin, somaxconn = data["settings"]
    assert fin["name"] == "net.ipv4.tcp_fin_timeout"
    assert "orphaned_fin_wait2 length_seconds=59.98" in fin["measured"]
    assert "time_wait length_seconds=60.01" in fin["measured"]
    assert fin["verdict"] == "confirmed" and fin["claim"] == "C11"
    assert somaxconn["measured"] == [] and somaxconn["verdict"] is None  # C15 was not run
    assert data["results"] == str(last_run.last_run_path())


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """A terminal wide enough that no name is folded."""
    monkeypatch.setenv("COLUMNS", "200")


@pytest.mark.usefixtures("wide")
def test_results_option_reads_any_json_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "out.json"
    path.write_text(json.dumps([r.to_json() for r in saved_run()]))
    assert main(["sysctl", "net.ipv4.tcp_fin_timeout", "--results", str(path)]) == 0
    out = capsys.readouterr().out
    assert "tcp_fin_timeout" in out and "59.98" in out and "somaxconn" not in out


@pytest.mark.usefixtures("wide")
def test_without_a_saved_run_the_table_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sysctl"]) == 0
    out = capsys.readouterr().out
    assert "no saved run yet" in out
    assert "tcp_tw_recycle" in out and "removed in Linux 4.12" in out


@pytest.mark.parametrize("args", [["nope"], ["tcp_fin_timeout", "tcp_nonsense", "--json"]])
def test_unknown_name_is_one_line_and_exit_2(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sysctl", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
    assert repr(args[-2] if args[-1] == "--json" else args[0]) in captured.err


def test_a_broken_results_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    assert main(["sysctl", "--results", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "bad.json" in err
