#!/usr/bin/env python3
"""One entry point for a fresh clone: sets up .venv on first use, then runs.

    python3 dev.py demo        # the main job: everything on loopback
    python3 dev.py test        # ruff, mypy and the test suite
    python3 dev.py framelab …  # any framelab command inside the venv

Needs only Python 3.11+ (and a C compiler for the optional accelerator; without
one framing runs its pure-Python loops). Setup is idempotent: the venv is
(re)installed only when pyproject.toml, setup.py or the C source changed since
the last install (a hash stamp in .venv).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".framelab-installed"
BIN = VENV / "bin"


#: what the install depends on: the package list and the C accelerators' build
INSTALL_INPUTS = (
    "pyproject.toml",
    "setup.py",
    "framing/_speedups.c",
    "framing/_msgpack_speedups.c",
)
#: Debian packages that some tests drive for real (one a line, `#` comments)
SYSTEM_PACKAGES = ROOT / "system-packages.txt"


def _wanted_stamp() -> str:
    digest = hashlib.sha256(sys.version.encode())
    for name in INSTALL_INPUTS:
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def ensure_venv() -> None:
    """Create .venv and install the project with its test extras if stale."""
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py may be run by an older python3
        sys.exit(f"framelab needs Python 3.11+, this is {sys.version.split()[0]}")
    wanted = _wanted_stamp()
    if STAMP.exists() and STAMP.read_text() == wanted and (BIN / "framelab").exists():
        return
    if not (BIN / "python").exists():
        print("setup: creating .venv", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    print("setup: installing framelab and its test tools into .venv", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "-e", f"{ROOT}[cli,plot,test,fuzz]"], check=True, cwd=ROOT)
    STAMP.write_text(wanted)


def wanted_system_packages() -> list[str]:
    lines = SYSTEM_PACKAGES.read_text().splitlines() if SYSTEM_PACKAGES.exists() else []
    return [word for line in lines if (word := line.split("#", 1)[0].strip())]


def ensure_system_packages() -> None:
    """Install the Debian packages the tests use, once; as root with apt only.

    Elsewhere nothing is installed and the tests that need a missing program
    skip, each naming it.
    """
    wanted = wanted_system_packages()
    if not wanted or os.geteuid() != 0 or not Path("/usr/bin/apt-get").exists():
        return
    query = ["dpkg-query", "-W", "-f=${Package} ${Status}\n", *wanted]
    listed = subprocess.run(query, capture_output=True, text=True).stdout
    installed = {line.split()[0] for line in listed.splitlines() if line.endswith(" installed")}
    missing = [name for name in wanted if name not in installed]
    if not missing:
        return
    print(f"setup: installing {' '.join(missing)} (Debian packages)", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    apt = ["apt-get", "-q", "-o", "Dpkg::Use-Pty=0"]
    subprocess.run([*apt, "update"], check=False, env=env, stdout=subprocess.DEVNULL)
    done = subprocess.run([*apt, "install", "-y", "--no-install-recommends", *missing], env=env)
    if done.returncode:
        names = " ".join(missing)
        print(f"setup: could not install {names}; tests that need them skip", flush=True)


def _run(argv: list[str]) -> int:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(argv, cwd=ROOT, env=env).returncode


def run_tests(extra: list[str]) -> int:
    """The one test command: lint, types, then pytest (README and CI use it)."""
    for step in (["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy"]):
        print(f"== {' '.join(step)}", flush=True)
        if rc := _run([str(BIN / step[0]), *step[1:]]):
            return rc
    print("== pytest", flush=True)
    return _run([str(BIN / "python"), "-m", "pytest", *extra])


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help"}:
        print(__doc__)
        return 0
    ensure_venv()
    command, rest = argv[0], argv[1:]
    if command == "test":
        ensure_system_packages()
        return run_tests(rest)
    if command == "setup":
        return 0
    if command == "framelab":
        return _run([str(BIN / "framelab"), *rest])
    return _run([str(BIN / "framelab"), command, *rest])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
