"""What the experiments read from the kernel (TCP_INFO, /proc/net/tcp,
/proc/net/netstat) must read right: checked against sockets made here."""

from __future__ import annotations

import socket

from framelab.lab.kernel import (
    _decode_address,
    connections_on_port,
    counter_delta,
    errno_name,
    netstat_counters,
    tcp_info,
)
from framelab.lab.sockets import connect_to, listening_socket


def test_proc_net_tcp_addresses_decode() -> None:
    # /proc/net/tcp prints an address as the hex of its bytes in host (little-endian) order
    assert _decode_address("0100007F:1F90") == ("127.0.0.1", 8080)
    assert _decode_address("00000000000000000000000001000000:0016") == ("::1", 22)
    ipv4_mapped = "0000000000000000FFFF00000100007F:01BB"
    assert _decode_address(ipv4_mapped) == ("::ffff:127.0.0.1", 443)


def test_a_listener_and_a_connection_appear_in_proc_net_tcp() -> None:
    with listening_socket() as listener, connect_to(listener) as pair:
        port = listener.getsockname()[1]
        ends = {
            (pair.client_address, pair.server_address),
            (pair.server_address, pair.client_address),
        }
        # TIME_WAIT rows of earlier connections may share the port: only ours count
        rows = [
            row
            for row in connections_on_port(port)
            if (row.local, row.remote) in ends or row.state == "LISTEN"
        ]
        states = sorted(row.state for row in rows)
        assert states == ["ESTABLISHED", "ESTABLISHED", "LISTEN"]
        listening = next(row for row in rows if row.state == "LISTEN")
        assert listening.local == ("127.0.0.1", port)
        client = next(row for row in rows if row.local[1] == pair.client_port)
        assert client.remote == ("127.0.0.1", port)
        assert client.inode > 0


def test_tcp_info_reads_state_mss_and_segment_counts() -> None:
    with listening_socket() as listener, connect_to(listener) as pair:
        before = tcp_info(pair.client)
        assert before.state == "ESTABLISHED"
        assert 0 < before["snd_mss"] <= 65483
        pair.client.sendall(b"x" * 100)
        assert pair.server.recv(100, socket.MSG_WAITALL) == b"x" * 100
        after = tcp_info(pair.client)
        assert after["data_segs_out"] == before["data_segs_out"] + 1
        assert after["bytes_acked"] - before["bytes_acked"] in (0, 100)  # the ACK may lag
        assert tcp_info(listener).state == "LISTEN"


def test_netstat_counters_count_an_active_open() -> None:
    before = netstat_counters()
    assert "Tcp.ActiveOpens" in before and "TcpExt.ListenOverflows" in before
    with listening_socket() as listener, connect_to(listener):
        pass
    delta = counter_delta(before, netstat_counters())
    assert delta.get("Tcp.ActiveOpens", 0) >= 1
    assert all(value != 0 for value in delta.values())


def test_errno_names() -> None:
    assert errno_name(ConnectionResetError(104, "reset")) == "ECONNRESET"
    assert errno_name(32) == "EPIPE"
    assert errno_name(ValueError("not an OSError")) is None
    assert errno_name(None) is None
