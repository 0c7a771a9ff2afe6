"""Shared test fixtures and markers.

`@pytest.mark.root` tests need packet capture (AF_PACKET) or network
namespaces; they skip with that reason when the suite does not run as root.
"""

from __future__ import annotations

import os

import pytest

IS_ROOT = os.geteuid() == 0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="needs root: packet capture (AF_PACKET) or network namespaces")
    if IS_ROOT:
        return
    for item in items:
        if item.get_closest_marker("root"):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def private_state_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs save their results for `framelab sysctl`: never into the real home from a test."""
    monkeypatch.setenv("FRAMELAB_STATE_DIR", str(tmp_path_factory.mktemp("state")))


@pytest.fixture
def png_magic() -> bytes:
    """The first bytes of every PNG file (the charts the --plot options write)."""
    return b"\x89PNG\r\n\x1a\n"
