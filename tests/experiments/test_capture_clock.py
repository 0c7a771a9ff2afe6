"""The capture's packet times are on the experiments' clock: a segment sent
after a timestamp is never stamped before it."""

from __future__ import annotations

import time

import pytest

from framelab.lab.capture import Capture, realtime_offset_ns
from framelab.lab.sockets import address_of, connect_to, listening_socket
from framelab.lab.traces import wait_for_flag


def test_the_realtime_offset_agrees_with_a_plain_reading() -> None:
    plain = time.time_ns() - time.monotonic_ns()
    assert abs(realtime_offset_ns() - plain) < 1_000_000  # same clocks, to a millisecond


@pytest.mark.root
def test_a_fin_sent_by_close_is_stamped_after_the_time_taken_before_close() -> None:
    with listening_socket() as listener, Capture("lo", ports=[address_of(listener)[1]]) as cap:
        for _ in range(20):
            with connect_to(listener) as pair:
                before = time.monotonic()
                pair.client.close()
                fin = wait_for_flag(cap, pair.client_port, "F", 2.0)
                assert fin is not None
                assert fin.time >= before, (fin.time - before) * 1e6
