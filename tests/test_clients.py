"""The client harness: options really set, send patterns, what the receiver's reads show."""

from __future__ import annotations

import socket
import statistics
import struct
from concurrent.futures import ThreadPoolExecutor

import pytest

from framelab.clients.harness import (
    IoLog,
    Sender,
    ServerReads,
    connect,
    make_messages,
    read_frames,
    record_reads,
    send_burst,
    send_large,
    write_write_read,
)
from framelab.lab.sockets import NO_OPTIONS, SocketOptions, connected_pair, corked
from framelab.servers.config import ServerConfig
from framelab.servers.runner import BackgroundServer
from framing import TruncatedFrame, encode_frame, encode_frames


def loopback_pair(
    client: SocketOptions = NO_OPTIONS, server: SocketOptions = NO_OPTIONS
) -> tuple[socket.socket, socket.socket]:
    """(client, accepted) with their options; the listener is closed at once."""
    pair = connected_pair(client=client, server=server, io_timeout=5.0)
    pair.listener.close()
    return pair.client, pair.server


@pytest.mark.kernel
def test_a_burst_read_late_arrives_in_fewer_reads_than_sends() -> None:
    messages = make_messages(20, 30)
    near, far = loopback_pair()
    with near, far:
        sends = send_burst(near, messages)
        received = record_reads(far, sends.total)  # the receiver only reads now
    assert sends.count == 20
    assert received.count < sends.count
    assert bytes(received.data) == b"".join(messages)


@pytest.mark.kernel
def test_a_large_write_arrives_in_several_reads() -> None:
    payload = make_messages(1, 1 << 20)[0]
    near, far = loopback_pair()
    with near, far, Sender(lambda: send_large(near, payload)):
        received = record_reads(far, len(payload), bufsize=64 * 1024)
    assert received.count >= len(payload) // (64 * 1024) > 1
    assert bytes(received.data) == payload


@pytest.mark.kernel
def test_a_corked_burst_leaves_as_one_segment_even_for_a_waiting_reader() -> None:
    messages = make_messages(20, 30)
    near, far = loopback_pair(client=SocketOptions(nodelay=True))
    with near, far, ThreadPoolExecutor(1) as pool:
        reading = pool.submit(record_reads, far, 600)  # blocked in recv() from the start
        with corked(near):
            send_burst(near, messages)
        received = reading.result(timeout=5)
    assert received.sizes == [600]


def test_socket_options_are_set_on_the_socket() -> None:
    options = SocketOptions(nodelay=True, sndbuf=32768, rcvbuf=65536, cork=True, linger=0)
    near, far = loopback_pair(client=options, server=SocketOptions(nodelay=False))
    with near, far:
        assert near.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert near.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 1
        assert near.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= 32768
        assert near.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 65536
        linger = struct.unpack("ii", near.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8))
        assert linger == (1, 0)
        assert far.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0


def test_make_messages_are_distinct_and_exactly_sized() -> None:
    for size in (1, 2, 30, 1000):
        messages = make_messages(50, size)
        assert all(len(m) == size for m in messages)
        if size >= 3:
            assert len(set(messages)) == 50


def test_read_frames_tells_a_clean_end_from_a_truncated_frame() -> None:
    near, far = loopback_pair()
    with near, far:
        near.sendall(encode_frames([b"one", b"two"]))
        near.shutdown(socket.SHUT_WR)
        log = IoLog()
        assert read_frames(far, 3, log=log) == [b"one", b"two"]  # fewer: the peer closed
        assert log.eof
    near, far = loopback_pair()
    with near, far:
        near.sendall(encode_frame(b"complete")[:6])
        near.shutdown(socket.SHUT_WR)
        with pytest.raises(TruncatedFrame):
            read_frames(far, 1)


def test_server_reads_are_per_client_and_holding_merges_a_burst() -> None:
    reads = ServerReads()
    messages = make_messages(20, 30)
    big = make_messages(1, 600_000)[0]
    config = ServerConfig(mode="raw", log_reads=False, on_read=reads)
    with (
        BackgroundServer(config) as srv,
        connect(srv.host, srv.port) as busy,
        connect(srv.host, srv.port) as large,
    ):
        with reads.holding(), Sender(lambda: send_burst(busy, messages)) as sender:
            assert sender.done.wait(5)
            reads.release()
            assert bytes(record_reads(busy, 600).data) == b"".join(messages)
        with Sender(lambda: send_large(large, big)):
            assert bytes(record_reads(large, len(big)).data) == big
        busy_log, large_log = reads.of(busy), reads.of(large)
    assert busy_log.total == 600 and busy_log.count < 20
    assert large_log.total == len(big) and large_log.count > 1


@pytest.mark.kernel
def test_write_write_read_stalls_with_nagle_against_a_whole_request_server() -> None:
    """Header then payload, then wait for the echo: with Nagle on, the payload
    waits for the server's delayed ACK (tens of ms); with TCP_NODELAY it does not."""
    payload = b"hello"
    header = encode_frame(payload)[:4]

    def round_trips(nodelay: bool) -> list[float]:
        with connect(srv.host, srv.port, SocketOptions(nodelay=nodelay)) as sock:
            logs = [write_write_read(sock, header, payload, 9) for _ in range(6)]
        assert all(bytes(log.data) == header + payload for log in logs)
        return [log.elapsed for log in logs[1:]]  # the first rides the quick-ACK start

    with BackgroundServer(ServerConfig(mode="framed")) as srv:
        nagle = statistics.median(round_trips(nodelay=False))
        nodelay = statistics.median(round_trips(nodelay=True))
    assert nagle > 0.02  # the delayed ACK is at least 40 ms on Linux; generous bound
    assert nagle > 5 * nodelay
