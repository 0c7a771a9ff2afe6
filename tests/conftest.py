"""Shared test fixtures: root detection for capture and namespace tests."""

from __future__ import annotations

import os

import pytest

IS_ROOT = os.geteuid() == 0
#: the first bytes of every PNG file (the charts the --plot options write)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

requires_root = pytest.mark.skipif(
    not IS_ROOT, reason="needs root: packet capture (AF_PACKET) or network namespaces"
)
