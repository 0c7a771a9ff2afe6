"""Sticky packets: TCP keeps bytes, UDP keeps datagrams, a length prefix restores
messages (claims C17, C20, C06).

TCP (C17), on plain loopback sockets:
- merged: N small send() calls, each its own segment (TCP_NODELAY, counted
  through TCP_INFO), all queued at the receiver before it reads (select()
  with SO_RCVLOWAT set to the total says when), then recv(64 KiB): the bytes
  of every send come out of one read.
- split: one sendall() of 1 MiB to a receiver with a 64 KiB receive buffer
  that asks recv() for the whole 1 MiB each time: the kernel hands it over
  in many pieces, so a read is not a message even when it asks for enough.

Framing (C20): the same two patterns carrying 4-byte big-endian length-prefixed
frames, the reads fed as they came to the project's framing.FrameDecoder:
exactly the messages sent come back, byte for byte, whatever the reads were.

UDP (C06): datagrams of several sizes (0 bytes up to the largest the kernel
accepts) sent before the receiver reads: each recvfrom() returns exactly one
datagram, whole; a short buffer truncates that datagram (MSG_TRUNC) and the
next call still returns the next one. The 8-byte UDP header is measured two
ways: the largest payload send() accepts (65535 - IP header - UDP header),
and, as root, every captured datagram's IP total length minus IP header
minus the payload we sent.

Cost: about 2 MiB through loopback and a few sockets; well under a second.
"""

from __future__ import annotations

import errno
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from framelab.common.words import plural
from framelab.experiments.context import RunContext
from framelab.experiments.registry import Experiment
from framelab.experiments.result import ClaimResult, Part, judge_parts
from framelab.lab.capture import Capture
from framelab.lab.kernel import (
    counter_delta,
    data_segments_out,
    errno_name,
    netstat_counters,
    segments_since,
)
from framelab.lab.packets import format_trace
from framelab.lab.sockets import (
    LOOPBACK,
    SocketOptions,
    address_of,
    connected_pair,
    readable,
    recv_exactly,
)
from framelab.lab.traces import maybe_capture, titled
from framing import FrameDecoder, encode_frame

NAME = "sticky"
MESSAGES = 10
MESSAGE_SIZE = 40
LARGE_PAYLOAD = 1 << 20
#: the receiver's SO_RCVBUF in the split pattern: far below the payload
SMALL_RCVBUF = 64 * 1024
#: recv() size in the merged pattern: room for every message at once
MERGED_READ_SIZE = 64 * 1024
MAX_FRAME = 8 << 20
EVENT_TIMEOUT = 2.0
#: the largest IPv4 datagram (16-bit total length) and an option-less IP header
IP_MAX_TOTAL = 65535
IP_HEADER = 20
UDP_SIZES = (0, 1, 100, 1000, 1472, 8000)
TRACE_LINES = 24


def payload(size: int, seed: int) -> bytes:
    """`size` bytes that differ from message to message (so a mix-up shows)."""
    pattern = bytes((seed * 7 + i) % 251 for i in range(251))
    return (pattern * (size // 251 + 1))[:size]


# -- TCP: one stream, its sends and its reads -----------------------------------------------
@dataclass
class Stream:
    """What crossed one loopback connection: send() sizes, segments, recv() sizes."""

    sends: list[int]
    segments: int | None  # data segments the sender's kernel emitted (TCP_INFO)
    reads: list[int]
    chunks: list[bytes] = field(repr=False)
    port: int
    read_size: int

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)

    def summary(self) -> dict[str, Any]:
        """The compact, JSON-ready view of the stream."""
        return {
            "sends": len(self.sends),
            "send_sizes": compact_sizes(self.sends),
            "data_segments": self.segments,
            "recv_size": self.read_size,
            "reads": len(self.reads),
            "read_sizes": compact_sizes(self.reads),
        }


def compact_sizes(sizes: list[int], keep: int = 6) -> list[int] | str:
    """Short lists as they are; long ones as "N values, min..max, total T"."""
    if len(sizes) <= keep:
        return sizes
    return f"{len(sizes)} values, {min(sizes)}..{max(sizes)}, total {sum(sizes)}"


def wait_until_queued(sock: socket.socket, total: int, timeout: float = EVENT_TIMEOUT) -> bool:
    """Block until `total` bytes wait in the receive queue (SO_RCVLOWAT makes
    select() report readable only then), without reading any of them."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, total)
    try:
        return readable(sock, timeout)
    finally:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)


def send_each(sock: socket.socket, writes: list[bytes]) -> None:
    for data in writes:
        sock.sendall(data)


def stream(
    writes: list[bytes],
    *,
    queued: bool,
    read_size: int,
    rcvbuf: int | None = None,
    cap: Capture | None = None,
) -> Stream:
    """Send `writes` (one sendall each) over a fresh loopback connection and read them.

    queued=True: every write is in the receiver's queue before its first
    recv() (they must fit in its buffer). queued=False: a thread sends while
    the receiver reads, for payloads larger than the buffers.
    """
    total = sum(map(len, writes))
    one_segment_per_send = SocketOptions(nodelay=True)
    with connected_pair(client=one_segment_per_send, server=SocketOptions(rcvbuf=rcvbuf)) as pair:
        if cap is not None:
            cap.add_port(pair.server_port)
        pair.server.settimeout(EVENT_TIMEOUT)
        before = data_segments_out(pair.client)
        if queued:
            send_each(pair.client, writes)
            if not wait_until_queued(pair.server, total):
                raise TimeoutError(f"{total} bytes were not all queued at the receiver")
            chunks = recv_exactly(pair.server, total, read_size)
        else:
            sender = threading.Thread(target=send_each, args=(pair.client, writes), daemon=True)
            sender.start()
            try:
                chunks = recv_exactly(pair.server, total, read_size)
            finally:
                sender.join(EVENT_TIMEOUT)
        segments = segments_since(pair.client, before)
        return Stream(
            sends=[len(w) for w in writes],
            segments=segments,
            reads=[len(c) for c in chunks],
            chunks=chunks,
            port=pair.server_port,
            read_size=read_size,
        )


def merged_pattern(writes: list[bytes], cap: Capture | None = None) -> Stream:
    return stream(writes, queued=True, read_size=MERGED_READ_SIZE, cap=cap)


def split_pattern(writes: list[bytes], cap: Capture | None = None) -> Stream:
    total = sum(map(len, writes))
    return stream(writes, queued=False, read_size=total, rcvbuf=SMALL_RCVBUF, cap=cap)


def data_segments_trace(cap: Capture | None, port: int) -> list[str]:
    """tcpdump-like lines of the segments carrying data to `port` (the sends, one by one)."""
    if cap is None:
        return []
    cap.wait_for(lambda p: p.proto == "tcp" and p.sport == port and p.has("F"), EVENT_TIMEOUT)
    sent = [p for p in cap.tcp(port) if p.dport == port and p.payload_len > 0]
    return format_trace(sent, cap.started)[:TRACE_LINES]


# -- C17: raw bytes -------------------------------------------------------------------------
def check_c17(cap: Capture | None) -> ClaimResult:
    messages = [payload(MESSAGE_SIZE, i) for i in range(MESSAGES)]
    large = payload(LARGE_PAYLOAD, 99)
    merged = merged_pattern(messages, cap)
    split = split_pattern([large])
    trace = titled(
        f"merged: the data segments of {len(merged.sends)} sends, then "
        f"{len(merged.reads)} recv() returned {merged.reads[0]} bytes",
        data_segments_trace(cap, merged.port),
    )
    return judge_c17(merged, b"".join(messages), split, large, trace)


def judge_c17(
    merged: Stream, merged_sent: bytes, split: Stream, split_sent: bytes, trace: list[str]
) -> ClaimResult:
    """Sticky packets both ways, from the two streams' send and recv sizes."""
    merged_seen = len(merged.reads) < len(merged.sends)
    split_seen = len(split.reads) > len(split.sends)
    intact = merged.data == merged_sent and split.data == split_sent
    observed = {
        "merged": {**merged.summary(), "bytes_intact": merged.data == merged_sent},
        "split": {
            **split.summary(),
            "receiver_rcvbuf": SMALL_RCVBUF,
            "bytes_intact": split.data == split_sent,
        },
    }
    parts = [
        Part(
            "two sends may arrive merged into one read",
            merged_seen,
            f"{len(merged.sends)} send() calls ({merged.segments} segments) came out of "
            f"{plural(len(merged.reads), 'recv()')}, the first returning {merged.reads[0]} bytes",
        ),
        Part(
            "one send may be split over several reads",
            split_seen,
            f"one send of {len(split_sent) >> 10} KiB took {plural(len(split.reads), 'recv()')} "
            f"of up to {max(split.reads)} bytes, though each asked for all of it",
        ),
        Part(
            "the bytes themselves arrive intact and in order (a byte stream)",
            intact,
            "every byte came back in order" if intact else "the bytes read differ from those sent",
        ),
    ]
    return judge_parts(NAME, "C17", parts, observed, trace=trace)


# -- C20: length-prefixed frames ------------------------------------------------------------
def decode_reads(chunks: list[bytes]) -> tuple[list[bytes], list[int]]:
    """Feed each read to a FrameDecoder as it came: (messages, messages completed per read)."""
    decoder = FrameDecoder(max_frame_length=MAX_FRAME)
    messages: list[bytes] = []
    per_read: list[int] = []
    for chunk in chunks:
        completed = decoder.feed(chunk)
        per_read.append(len(completed))
        messages += [bytes(p) for p in completed]
    decoder.end_of_stream()  # raises TruncatedFrame if a frame were cut off
    return messages, per_read


@dataclass(frozen=True)
class FramedCase:
    """Length-prefixed messages through one stream, and what the decoder made of its reads."""

    stream: Stream
    message_sizes: list[int]
    decoded_per_read: list[int]
    identical: bool  # the decoded messages equal the sent ones, byte for byte

    @property
    def messages_decoded(self) -> int:
        return sum(self.decoded_per_read)

    @property
    def restored(self) -> bool:
        return self.identical and self.messages_decoded == len(self.message_sizes)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.stream.summary(),
            "messages_sent": len(self.message_sizes),
            "message_sizes": compact_sizes(self.message_sizes),
            "messages_decoded": self.messages_decoded,
            "messages_per_read": compact_sizes(self.decoded_per_read, keep=12),
            "identical": self.identical,
        }


def framed_case(messages: list[bytes], split: bool) -> FramedCase:
    frames = [encode_frame(m, MAX_FRAME) for m in messages]
    seen = split_pattern(frames) if split else merged_pattern(frames)
    decoded, per_read = decode_reads(seen.chunks)
    return FramedCase(seen, [len(m) for m in messages], per_read, decoded == messages)


def check_c20() -> ClaimResult:
    small = [payload(size, i) for i, size in enumerate((0, 1, 5, 40, 100, 300, 4, 1000, 17, 0))]
    merged = framed_case(small, split=False)
    split = framed_case([payload(LARGE_PAYLOAD, 7)], split=True)
    return judge_c20(merged, split)


def judge_c20(merged: FramedCase, split: FramedCase) -> ClaimResult:
    """C20 from the two cases: every message back, byte for byte, however the reads cut."""
    restored = merged.restored and split.restored
    reads_differ = any(len(c.stream.reads) != len(c.stream.sends) for c in (merged, split))
    large = sum(split.message_sizes)
    parts = [
        Part(
            "a 4-byte length header before each message lets the receiver split the stream back",
            restored,
            f"{len(merged.stream.sends)} frames read in "
            f"{plural(len(merged.stream.reads), 'recv()')} decoded "
            f"{merged.messages_decoded}/{len(merged.message_sizes)}, and "
            f"{len(split.message_sizes)} frame of {large >> 10} KiB read in "
            f"{plural(len(split.stream.reads), 'recv()')} decoded "
            f"{split.messages_decoded}/{len(split.message_sizes)}; byte for byte: "
            f"{merged.identical and split.identical} (empty messages included)",
        ),
    ]
    observed = {
        "merged": merged.to_json(),
        "split": split.to_json(),
        "reads_differed_from_sends": reads_differ,
    }
    return judge_parts(NAME, "C20", parts, observed)


# -- C06: UDP datagrams ---------------------------------------------------------------------
def largest_udp_payload(sender: socket.socket, receiver: socket.socket) -> tuple[int, str | None]:
    """The largest datagram send() accepts (binary search), and the errno above it."""
    target = address_of(receiver)
    good, bad, error = 0, IP_MAX_TOTAL + 1, None
    while bad - good > 1:
        size = (good + bad) // 2
        try:
            sender.sendto(bytes(size), target)
            good = size
        except OSError as exc:
            if exc.errno != errno.EMSGSIZE:
                raise
            bad, error = size, errno_name(exc)
    drain_datagrams(receiver)
    return good, error


def drain_datagrams(sock: socket.socket) -> int:
    """Discard what is queued; how many datagrams that was."""
    count = 0
    sock.setblocking(False)
    try:
        while True:
            sock.recv(IP_MAX_TOTAL)
            count += 1
    except BlockingIOError:
        return count
    finally:
        sock.settimeout(EVENT_TIMEOUT)


def truncation(sender: socket.socket, receiver: socket.socket) -> dict[str, Any]:
    """A recv buffer shorter than the datagram: the rest is discarded, not kept for later."""
    target = address_of(receiver)
    sender.sendto(payload(100, 1), target)
    sender.sendto(payload(5, 2), target)
    first, _, flags, _ = receiver.recvmsg(10)
    second, _, _, _ = receiver.recvmsg(10)
    return {
        "datagram": 100,
        "buffer": 10,
        "got": len(first),
        "msg_trunc": bool(flags & socket.MSG_TRUNC),
        "next_recv": len(second),
        "next_is_next_datagram": second == payload(5, 2),
    }


def udp_header_from_capture(cap: Capture | None, port: int, sizes: list[int]) -> list[int] | None:
    """IP total length - IP header length - payload sent, per captured datagram."""
    if cap is None:
        return None
    cap.wait_for(
        lambda _: sum(1 for p in cap.packets if p.proto == "udp" and p.dport == port) >= len(sizes),
        EVENT_TIMEOUT,
    )
    packets = [p for p in list(cap.packets) if p.proto == "udp" and p.dport == port]
    pairs = zip(packets, sizes, strict=False)
    return [p.ip_total_len - p.ip_header_len - size for p, size in pairs]


@dataclass(frozen=True)
class UdpBurst:
    """C06: datagrams of many sizes sent before the first read, and what came out."""

    sent: list[bytes] = field(repr=False)
    received: list[bytes] = field(repr=False)
    left_over: int  # datagrams still queued after one read per datagram sent
    drops: int  # Udp.RcvbufErrors during the burst
    short_buffer: dict[str, Any]  # a 10-byte buffer: truncation, and what the next read got
    largest_payload: int  # the largest payload one datagram could carry
    one_more_byte: str | None  # what a byte more gave (the errno's name)
    header_by_capture: list[int] | None  # UDP header sizes in the captured frames (root)


def check_c06(cap: Capture | None) -> ClaimResult:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        receiver.bind((LOOPBACK, 0))
        receiver.settimeout(EVENT_TIMEOUT)
        sender.bind((LOOPBACK, 0))
        largest, too_large_error = largest_udp_payload(sender, receiver)
        sizes = [*UDP_SIZES, largest]
        datagrams = [payload(size, i) for i, size in enumerate(sizes)]
        port = address_of(receiver)[1]
        if cap is not None:
            cap.add_port(port)
        counters = netstat_counters()
        for data in datagrams:  # all sent before the first read
            sender.sendto(data, address_of(receiver))
        received = [receiver.recvfrom(IP_MAX_TOTAL)[0] for _ in datagrams]
        left_over = drain_datagrams(receiver)
        drops = counter_delta(counters, netstat_counters()).get("Udp.RcvbufErrors", 0)
        cut = truncation(sender, receiver)
        header_by_capture = None
        trace: list[str] = []
        if cap is not None:
            header_by_capture = udp_header_from_capture(cap, port, sizes)
            trace = titled("the burst of datagrams", cap.lines(port)[: len(sizes)])
    finally:
        receiver.close()
        sender.close()
    burst = UdpBurst(
        datagrams, received, left_over, drops, cut, largest, too_large_error, header_by_capture
    )
    return judge_c06(burst, trace)


def judge_c06(burst: UdpBurst, trace: list[str]) -> ClaimResult:
    """UDP's header size, and datagrams whole and separate, from one burst."""
    sizes = [len(d) for d in burst.sent]
    largest, cut, left_over = burst.largest_payload, burst.short_buffer, burst.left_over
    whole = [r == d for r, d in zip(burst.received, burst.sent, strict=True)]
    header_by_limit = IP_MAX_TOTAL - IP_HEADER - largest
    observed = {
        "sent_sizes": sizes,
        "recvfrom_sizes": [len(r) for r in burst.received],
        "each_whole_and_in_order": all(whole),
        "left_over_after_n_reads": left_over,
        "receive_buffer_drops": burst.drops,
        "short_buffer": cut,
        "largest_payload": largest,
        "one_more_byte": burst.one_more_byte,
        "udp_header_by_size_limit": header_by_limit,
        "udp_header_by_capture": burst.header_by_capture,
    }
    headers = {header_by_limit, *(burst.header_by_capture or [])}
    parts = [
        Part(
            "UDP's header is 8 bytes",
            headers == {8},
            f"{IP_MAX_TOTAL} - {IP_HEADER} - {largest} (the largest payload sent; one more byte: "
            f"{burst.one_more_byte}) = {header_by_limit}"
            + (
                f"; the captured datagrams' headers: {sorted(set(burst.header_by_capture))}"
                if burst.header_by_capture
                else "; not captured (needs root)"
            ),
        ),
        Part(
            "each datagram arrives whole and separate (no sticky packets in UDP)",
            all(whole) and left_over == 0 and cut["msg_trunc"] and cut["next_is_next_datagram"],
            f"{len(sizes)} datagrams ({sizes[0]}..{largest} bytes), all sent before the first "
            f"read -> {len(burst.received)} recvfrom() with sizes matching: {all(whole)}, "
            f"{left_over} left over, {burst.drops} dropped; a 10-byte buffer "
            f"{'truncated' if cut['msg_trunc'] else 'did not truncate'} one and the next call "
            f"{'got the next datagram' if cut['next_is_next_datagram'] else 'did not'}",
        ),
    ]
    return judge_parts(NAME, "C06", parts, observed, trace=trace)


def run(ctx: RunContext) -> list[ClaimResult]:
    with maybe_capture(ctx.can_capture, ports=()) as cap:
        results = [check_c17(cap), check_c20(), check_c06(cap)]
    order = {claim: i for i, claim in enumerate(EXPERIMENT.claims)}
    return sorted(results, key=lambda r: order[r.claim])


EXPERIMENT = Experiment(
    name=NAME,
    claims=("C06", "C17", "C20"),
    needs_root="partly",
    description=(
        "TCP merges and splits sends (sticky packets), a 4-byte length header restores the"
        " messages; UDP datagrams arrive whole, with an 8-byte header"
    ),
    run=run,
)
