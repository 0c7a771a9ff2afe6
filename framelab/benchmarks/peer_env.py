"""Environments of their own for peers whose libraries cannot share ours.

msgpack-rpc-python needs msgpack-python 0.5 and Tornado 4: installed next to
framelab they would replace the msgpack the library runs on. So such a peer
gets a virtual environment under the user's cache directory
(`$XDG_CACHE_HOME/framelab/peers/NAME`, default `~/.cache`), made on first
use with `python -m venv` and pip, and made again only when its
requirements or the Python version change (a stamp file says which ones it
holds): idempotent, like the project's own setup.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

#: peer environment -> the requirements pip installs into it
REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "msgpack-rpc-python": ("msgpack-rpc-python==0.4.1",),
}
STAMP = ".framelab-peer"
#: pip on a cold cache builds msgpack-python from its sdist
SETUP_TIMEOUT = 600.0


class PeerEnvironmentUnavailable(RuntimeError):
    """The environment could not be made (no network, no pip, a build failed)."""


def root() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "framelab" / "peers"


def _wanted(name: str) -> str:
    digest = hashlib.sha256(sys.version.encode())
    for requirement in REQUIREMENTS[name]:
        digest.update(requirement.encode())
    return digest.hexdigest()


def python_of(name: str) -> Path:
    """The interpreter of environment `name` (it may not exist yet)."""
    return root() / name / "bin" / "python"


def ready(name: str) -> bool:
    stamp = root() / name / STAMP
    return python_of(name).exists() and stamp.exists() and stamp.read_text() == _wanted(name)


def ensure(name: str) -> Path:
    """The interpreter of environment `name`, made first if missing or stale."""
    if ready(name):
        return python_of(name)
    place = root() / name
    try:
        if not python_of(name).exists():
            place.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, "-m", "venv", str(place)], check=True, timeout=120)
        pip = [str(python_of(name)), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run(
            [*pip, *REQUIREMENTS[name]],
            check=True,
            capture_output=True,
            text=True,
            timeout=SETUP_TIMEOUT,
        )
    except (OSError, subprocess.SubprocessError) as error:
        said = (getattr(error, "stderr", None) or str(error)).strip().splitlines()
        why = said[-1][:300] if said else type(error).__name__  # pip's last line says it
        raise PeerEnvironmentUnavailable(
            f"could not make the {name} environment in {place}: {why}"
        ) from error
    (place / STAMP).write_text(_wanted(name))
    return python_of(name)
