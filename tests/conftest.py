"""Shared test fixtures: root detection for capture and namespace tests."""

from __future__ import annotations

import os

import pytest

IS_ROOT = os.geteuid() == 0

requires_root = pytest.mark.skipif(
    not IS_ROOT, reason="needs root: packet capture (AF_PACKET) or network namespaces"
)
