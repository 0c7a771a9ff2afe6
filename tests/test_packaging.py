"""The distribution as a user gets it: built, installed into a fresh venv, run.

The sdist is built from this tree, the wheel from the sdist (as pip would),
and both are installed where no source tree is importable, so an import that
only works from the checkout fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    environment.update(env)
    return subprocess.run(
        argv, cwd=cwd, env=environment, capture_output=True, text=True, timeout=300
    )


def _build(out: Path, *extra: str, **env: str) -> list[Path]:
    """sdist from the tree, then the wheel from that sdist (`python -m build`)."""
    done = _run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), *extra, str(ROOT)],
        cwd=out,
        **env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return sorted(out.iterdir())


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return _build(tmp_path_factory.mktemp("dist"))


def _fresh_venv(where: Path) -> Path:
    venv.EnvBuilder(with_pip=True).create(where)
    return where / "bin"


def _install(bin_dir: Path, target: str, cwd: Path) -> None:
    pip = [str(bin_dir / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    done = _run([*pip, target], cwd=cwd)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_build_gives_an_sdist_and_a_wheel(built: list[Path]) -> None:
    names = [path.name for path in built]
    assert any(name.endswith(".tar.gz") for name in names), names
    assert any(name.endswith(".whl") for name in names), names


def test_the_wheel_adds_only_framelab_and_framing(built: list[Path]) -> None:
    wheel = next(path for path in built if path.suffix == ".whl")
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/", 1)[0] for name in archive.namelist()}
        assert "framing/py.typed" in archive.namelist()
    packages = {top for top in tops if not top.endswith((".dist-info", ".data"))}
    assert packages == {"framelab", "framing"}


def test_the_installed_wheel_runs_from_a_fresh_venv(built: list[Path], tmp_path: Path) -> None:
    wheel = next(path for path in built if path.suffix == ".whl")
    bin_dir = _fresh_venv(tmp_path / "venv")
    _install(bin_dir, str(wheel), cwd=tmp_path)
    python, framelab = str(bin_dir / "python"), str(bin_dir / "framelab")

    imported = _run([python, "-c", "import framing, sys; print('rich' in sys.modules)"], tmp_path)
    assert imported.returncode == 0 and imported.stdout.strip() == "False", imported.stderr

    accelerated = _run(
        [
            python,
            "-c",
            "from framing import _codec, _msgpack_codec as m; "
            "print(_codec.ACCELERATED, m.ACCELERATED)",
        ],
        tmp_path,
    )
    assert accelerated.stdout.split() == ["True", "True"], accelerated.stderr

    helped = _run([framelab, "--help"], tmp_path)
    assert helped.returncode == 0 and "experiment" in helped.stdout, helped.stderr

    sticky = _run([framelab, "sticky", "--json"], tmp_path)
    assert sticky.returncode == 0, sticky.stderr
    assert json.loads(sticky.stdout)

    # a command that needs the `cli` extra says so in one line instead of a traceback
    listed = _run([framelab, "experiment", "list"], tmp_path)
    assert listed.returncode == 2
    assert listed.stderr.strip() == (
        "framelab: this command needs rich: pip install 'framelab[cli]'"
    ), listed.stderr


def test_the_wheel_built_from_the_sdist_carries_the_accelerators(built: list[Path]) -> None:
    wheel = next(path for path in built if path.suffix == ".whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    for module in ("framing/_speedups", "framing/_msgpack_speedups"):
        assert any(name.startswith(module) and name.endswith(".so") for name in names), module


def test_without_a_compiler_the_sdist_still_installs_the_pure_twins(
    built: list[Path], tmp_path: Path
) -> None:
    sdist = next(path for path in built if path.name.endswith(".tar.gz"))
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    done = _run([*pip, "--wheel-dir", str(tmp_path), str(sdist)], cwd=tmp_path, CC="false")
    assert done.returncode == 0, done.stderr[-2000:]
    wheel = next(tmp_path.glob("*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "framing/_codec.py" in names and "framing/_msgpack_codec.py" in names
    assert not any(name.endswith(".so") for name in names)


def test_dev_setup_reinstalls_when_any_compiled_source_changes() -> None:
    """dev.py rebuilds the venv only when one of its inputs changed: every C
    source setup.py compiles must be one of them, or an edit to it would run
    the tests against the old build."""
    sys.path.insert(0, str(ROOT))
    try:
        import dev
    finally:
        sys.path.remove(str(ROOT))
    setup_text = (ROOT / "setup.py").read_text()
    compiled = {str(path.relative_to(ROOT)) for path in ROOT.glob("framing/*.c")}
    assert compiled and all(f'"{source}"' in setup_text for source in compiled)
    assert compiled <= set(dev.INSTALL_INPUTS)
