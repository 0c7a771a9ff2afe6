"""The sans-IO connection policy: every transition, with a fake clock and no sockets."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from framing import FrameDecoder, FramingError, encode_frame, encode_frames
from framing.connection import (
    CLOSE,
    DELIVERY_SLICE,
    PAUSE_READING,
    RESUME_READING,
    WRITE_EOF,
    Action,
    ArmTimer,
    ConnectionPolicy,
    State,
    Write,
)
from framing.decoder import BytesLike
from framing.errors import FrameTimeout, FrameTooLarge, TruncatedFrame
from framing.observer import ErrorKind, NullObserver

TIMEOUT = 5.0
WINDOW = 2.0


class Recorder(NullObserver):
    def __init__(self) -> None:
        self.frames_in_batches: list[int] = []
        self.bytes_in = 0
        self.errors: list[ErrorKind] = []
        self.pauses = 0
        self.opened: list[str] = []
        self.closed: list[BaseException | None] = []

    def connection_opened(self, peer: str) -> None:
        self.opened.append(peer)

    def connection_closed(self, peer: str, error: BaseException | None) -> None:
        self.closed.append(error)

    def frames_in(self, frames: Sequence[BytesLike]) -> None:
        self.frames_in_batches.append(len(frames))
        self.bytes_in += sum(len(f) for f in frames)

    def error(self, kind: ErrorKind, error: BaseException) -> None:
        self.errors.append(kind)

    def writes_paused(self) -> None:
        self.pauses += 1


def reply_why(error: FramingError) -> bytes:
    return f"bye: {type(error).__name__}".encode()


def state_of(policy: ConnectionPolicy) -> State:
    """Read through a call, so mypy does not narrow the state across transitions."""
    return policy.state


def make(
    *,
    frame_timeout: float | None = TIMEOUT,
    error_reply: bool = True,
    unread: int = 0,
    max_frame: int = 1000,
    can_write_eof: bool = True,
) -> tuple[ConnectionPolicy, Recorder]:
    observer = Recorder()
    policy = ConnectionPolicy(
        FrameDecoder(max_frame),
        frame_timeout=frame_timeout,
        discard_window=WINDOW,
        error_reply=reply_why if error_reply else None,
        observer=observer,
        unread=lambda: unread,
        can_write_eof=can_write_eof,
    )
    policy.connection_made("192.0.2.1:4000")
    return policy, observer


def acts(policy: ConnectionPolicy) -> list[Action]:
    return list(policy.actions())


def drain(policy: ConnectionPolicy) -> list[bytes]:
    """What an adapter does after every input: hand out every slice."""
    out: list[bytes] = []
    while frames := policy.next_frames():
        out += [bytes(f) for f in frames]
    return out


def feed(policy: ConnectionPolicy, data: BytesLike, now: float) -> tuple[list[bytes], list[Action]]:
    policy.receive(data, now)
    frames = drain(policy)
    return frames, acts(policy)


# -- OPEN: frames and the frame timer -------------------------------------------------
def test_complete_frames_are_delivered_with_no_timer() -> None:
    policy, observer = make()
    frames, actions = feed(policy, encode_frames([b"a", b"", b"bc"]), 0.0)
    assert frames == [b"a", b"", b"bc"]
    assert actions == []
    assert state_of(policy) is State.OPEN
    assert observer.frames_in_batches == [3] and observer.bytes_in == 3
    assert observer.opened == ["192.0.2.1:4000"]


def test_first_byte_arms_the_timer_and_completion_cancels_it() -> None:
    policy, _ = make()
    wire = encode_frame(b"hello")
    assert feed(policy, wire[:2], 10.0) == ([], [ArmTimer(10.0 + TIMEOUT)])
    assert feed(policy, wire[2:], 11.0) == ([b"hello"], [ArmTimer(None)])


def test_more_bytes_of_the_same_frame_do_not_extend_its_deadline() -> None:
    policy, _ = make()
    wire = encode_frame(b"x" * 100)
    feed(policy, wire[:10], 0.0)
    assert feed(policy, wire[10:50], 3.0) == ([], [])
    assert policy.deadline == TIMEOUT


@pytest.mark.parametrize("early_ms", [1, 1000])
def test_the_frame_timeout_boundary_to_the_millisecond(early_ms: int) -> None:
    policy, observer = make()
    feed(policy, encode_frame(b"slow")[:3], 100.0)
    policy.clock(100.0 + TIMEOUT - early_ms / 1000)
    assert state_of(policy) is State.OPEN and policy.error is None
    assert acts(policy) == [ArmTimer(100.0 + TIMEOUT)]  # woken early: asks again
    policy.clock(100.0 + TIMEOUT)
    assert state_of(policy) is State.DISCARDING
    assert isinstance(policy.error, FrameTimeout)
    assert policy.error.peer == "192.0.2.1:4000" and policy.error.buffered == 3
    assert acts(policy) == [
        Write(encode_frame(b"bye: FrameTimeout")),
        WRITE_EOF,
        ArmTimer(100.0 + TIMEOUT + WINDOW),
    ]
    assert observer.errors == ["timeout"]


def test_a_frame_completed_a_millisecond_before_its_deadline_is_on_time() -> None:
    policy, _ = make()
    wire = encode_frame(b"just in time")
    feed(policy, wire[:5], 0.0)
    assert feed(policy, wire[5:], TIMEOUT - 0.001) == ([b"just in time"], [ArmTimer(None)])
    policy.clock(TIMEOUT)  # a stale timer firing changes nothing
    assert state_of(policy) is State.OPEN and acts(policy) == []


def test_pipelined_frames_each_get_a_full_timeout_from_their_first_byte() -> None:
    policy, _ = make()
    first, second = encode_frame(b"one" * 10), encode_frame(b"two" * 10)
    feed(policy, first[:5], 0.0)
    # one read completes the first frame and starts the second at t=4
    assert feed(policy, first[5:] + second[:5], 4.0) == ([b"one" * 10], [ArmTimer(4.0 + TIMEOUT)])
    policy.clock(TIMEOUT)  # the first frame's deadline: the second is not late
    assert state_of(policy) is State.OPEN
    assert acts(policy) == [ArmTimer(4.0 + TIMEOUT)]
    policy.clock(4.0 + TIMEOUT)
    assert isinstance(policy.error, FrameTimeout)


def test_idle_time_between_frames_is_not_limited() -> None:
    policy, _ = make()
    feed(policy, encode_frame(b"a"), 0.0)
    policy.clock(1000.0)
    assert state_of(policy) is State.OPEN and acts(policy) == []
    assert feed(policy, encode_frame(b"b"), 2000.0) == ([b"b"], [])


def test_no_frame_timeout_means_no_timer() -> None:
    policy, _ = make(frame_timeout=None)
    assert feed(policy, encode_frame(b"abc")[:2], 0.0) == ([], [])
    assert policy.deadline is None


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_a_frame_timeout_must_be_positive(bad: float) -> None:
    with pytest.raises(ValueError, match="frame_timeout"):
        ConnectionPolicy(frame_timeout=bad)


# -- errors: reply, FIN, discard ----------------------------------------------------
def test_an_oversized_header_answers_the_frames_before_it_then_discards() -> None:
    policy, observer = make(max_frame=100)
    wire = encode_frames([b"ok1", b"ok2"]) + (5000).to_bytes(4, "big") + b"junk"
    frames, actions = feed(policy, wire, 1.0)
    assert frames == [b"ok1", b"ok2"]
    bye = Write(encode_frame(b"bye: FrameTooLarge"))
    assert actions == [bye, WRITE_EOF, ArmTimer(1.0 + WINDOW)]
    assert isinstance(policy.error, FrameTooLarge) and policy.error.declared == 5000
    assert observer.errors == ["oversize"]
    # discarding: input is dropped unparsed, through a scratch buffer
    room = policy.get_buffer(-1)
    room[:4] = b"\xff\xff\xff\xff"
    policy.buffer_updated(4, 1.5)
    assert drain(policy) == [] and acts(policy) == []
    policy.end_of_stream(1.6)
    assert acts(policy) == [CLOSE, ArmTimer(None)]
    assert state_of(policy) is State.CLOSED


def test_the_discard_window_ends_with_a_close() -> None:
    policy, _ = make(max_frame=10)
    feed(policy, (11).to_bytes(4, "big"), 0.0)
    policy.clock(WINDOW - 0.001)
    assert state_of(policy) is State.DISCARDING
    assert acts(policy) == [ArmTimer(WINDOW)]
    policy.clock(WINDOW)
    assert state_of(policy) is State.CLOSED and acts(policy) == [CLOSE, ArmTimer(None)]


def test_without_an_error_reply_hook_nothing_is_said() -> None:
    policy, _ = make(error_reply=False, max_frame=10)
    _, actions = feed(policy, (11).to_bytes(4, "big"), 0.0)
    assert actions == [WRITE_EOF, ArmTimer(WINDOW)]


def test_an_error_reply_over_the_frame_limit_is_not_sent() -> None:
    policy, _ = make(max_frame=3)  # b"bye: FrameTooLarge" does not fit
    _, actions = feed(policy, (4).to_bytes(4, "big"), 0.0)
    assert actions == [WRITE_EOF, ArmTimer(WINDOW)]


def test_a_transport_that_cannot_half_close_is_closed() -> None:
    policy, _ = make(error_reply=False, max_frame=10, can_write_eof=False)
    _, actions = feed(policy, (11).to_bytes(4, "big"), 0.0)
    assert actions == [CLOSE] and state_of(policy) is State.CLOSED


def test_end_of_stream_inside_a_frame_replies_and_closes() -> None:
    policy, observer = make()
    feed(policy, encode_frame(b"cut short")[:6], 0.0)
    policy.end_of_stream(1.0)
    assert acts(policy) == [Write(encode_frame(b"bye: TruncatedFrame")), CLOSE, ArmTimer(None)]
    assert isinstance(policy.error, TruncatedFrame) and policy.error.peer == "192.0.2.1:4000"
    assert observer.errors == ["truncated"]


def test_end_of_stream_at_a_boundary_closes_cleanly() -> None:
    policy, observer = make()
    feed(policy, encode_frame(b"done"), 0.0)
    policy.end_of_stream(1.0)
    assert acts(policy) == [CLOSE] and policy.error is None
    policy.connection_lost(None)
    assert observer.closed == [None] and observer.errors == []


def test_the_application_rejecting_a_peer_discards_like_bad_framing() -> None:
    policy, observer = make()
    feed(policy, encode_frame(b"q"), 0.0)
    policy.reject(FrameTooLarge(2000, 1000, encoding=True), 3.0)
    assert acts(policy) == [
        Write(encode_frame(b"bye: FrameTooLarge")),
        WRITE_EOF,
        ArmTimer(3.0 + WINDOW),
    ]
    assert observer.errors == ["oversize"]


def test_a_crashed_handler_closes_only_this_connection() -> None:
    policy, observer = make()
    feed(policy, encode_frame(b"boom")[:3], 0.0)
    crash = RuntimeError("handler bug")
    policy.abandon(crash)
    assert acts(policy) == [CLOSE, ArmTimer(None)]
    assert policy.error is crash and observer.errors == ["handler"]


def test_connection_lost_cancels_the_timer_and_reports_the_error() -> None:
    policy, observer = make()
    feed(policy, encode_frame(b"abc")[:2], 0.0)
    reset = ConnectionResetError("reset by peer")
    policy.connection_lost(reset)
    assert acts(policy) == [ArmTimer(None)]
    assert state_of(policy) is State.CLOSED and observer.closed == [reset]
    policy.clock(100.0)  # a late timer after the loss does nothing
    assert acts(policy) == []


# -- flow control --------------------------------------------------------------------
def test_paused_writes_hold_frames_and_pause_reading_until_resumed() -> None:
    policy, observer = make()
    policy.receive(encode_frames([b"%d" % i for i in range(DELIVERY_SLICE * 2 + 5)]), 0.0)
    assert len(policy.next_frames()) == DELIVERY_SLICE
    policy.writes_paused()  # the first slice's replies filled the write buffer
    assert policy.next_frames() == []
    assert acts(policy) == [PAUSE_READING]
    assert observer.pauses == 1
    policy.writes_resumed(1.0)
    sizes = []
    while frames := policy.next_frames():
        sizes.append(len(frames))
    assert sizes == [DELIVERY_SLICE, 5]
    assert acts(policy) == [RESUME_READING]


def test_reading_stays_paused_while_held_frames_refill_the_buffer() -> None:
    policy, _ = make()
    policy.receive(encode_frames([b"x"] * (DELIVERY_SLICE * 2)), 0.0)
    policy.next_frames()
    policy.writes_paused()
    policy.writes_resumed(1.0)
    assert len(policy.next_frames()) == DELIVERY_SLICE
    policy.writes_paused()  # those replies filled it again
    assert policy.next_frames() == []
    assert acts(policy) == [PAUSE_READING]  # once, and no resume in between


def test_end_of_stream_waits_for_held_frames() -> None:
    policy, _ = make()
    policy.receive(encode_frames([b"x"] * (DELIVERY_SLICE + 1)), 0.0)
    policy.next_frames()
    policy.writes_paused()
    policy.end_of_stream(1.0)
    assert acts(policy) == [PAUSE_READING]  # no CLOSE: one frame is unanswered
    policy.writes_resumed(2.0)
    assert drain(policy) == [b"x"]
    assert acts(policy) == [RESUME_READING, CLOSE]


# -- graceful drain ------------------------------------------------------------------
def test_shutdown_when_idle_sends_fin_at_once() -> None:
    policy, _ = make()
    feed(policy, encode_frame(b"a"), 0.0)
    policy.shutdown_requested(5.0)
    assert policy.next_frames() == []
    assert acts(policy) == [WRITE_EOF, ArmTimer(5.0 + WINDOW)]
    assert state_of(policy) is State.DISCARDING


def test_shutdown_waits_for_a_frame_in_flight_then_answers_it() -> None:
    policy, _ = make()
    wire = encode_frame(b"in flight")
    feed(policy, wire[:4], 0.0)
    policy.shutdown_requested(1.0)
    assert state_of(policy) is State.DRAINING
    assert acts(policy) == []
    frames, actions = feed(policy, wire[4:], 2.0)
    assert frames == [b"in flight"]
    assert actions == [ArmTimer(None), WRITE_EOF, ArmTimer(2.0 + WINDOW)]


def test_shutdown_waits_for_bytes_still_in_the_kernel() -> None:
    waiting = [len(encode_frame(b"late"))]
    policy = ConnectionPolicy(FrameDecoder(1000), unread=lambda: waiting[0])
    policy.shutdown_requested(0.0)
    assert acts(policy) == []
    waiting[0] = 0
    frames, actions = feed(policy, encode_frame(b"late"), 1.0)
    assert frames == [b"late"] and WRITE_EOF in actions


def test_shutdown_waits_for_frames_held_by_paused_writes() -> None:
    policy, _ = make()
    policy.receive(encode_frames([b"y"] * (DELIVERY_SLICE + 3)), 0.0)
    policy.next_frames()
    policy.writes_paused()
    policy.shutdown_requested(1.0)
    assert policy.next_frames() == [] and acts(policy) == [PAUSE_READING]
    policy.writes_resumed(2.0)
    assert drain(policy) == [b"y"] * 3
    assert acts(policy) == [RESUME_READING, WRITE_EOF, ArmTimer(2.0 + WINDOW)]


def test_a_timeout_while_draining_still_fails_the_frame() -> None:
    policy, _ = make()
    feed(policy, encode_frame(b"stuck")[:2], 0.0)
    policy.shutdown_requested(1.0)
    policy.clock(TIMEOUT)
    assert isinstance(policy.error, FrameTimeout) and state_of(policy) is State.DISCARDING


# -- the zero-copy path and the copying path agree --------------------------------------
@given(
    payloads=st.lists(st.binary(max_size=300), max_size=20),
    cuts=st.lists(st.integers(min_value=1, max_value=97), max_size=40),
)
def test_any_chunking_through_either_path_delivers_the_same_frames(
    payloads: list[bytes], cuts: list[int]
) -> None:
    wire = encode_frames(payloads)
    zero_copy, _ = make(max_frame=1000)
    copying, _ = make(max_frame=1000)
    got_zero: list[bytes] = []
    got_copy: list[bytes] = []
    pos, now = 0, 0.0
    for size in [*cuts, len(wire)]:
        chunk = wire[pos : pos + size]
        pos += len(chunk)
        while chunk:
            room = zero_copy.get_buffer(len(chunk))
            count = min(len(room), len(chunk))
            room[:count] = chunk[:count]
            zero_copy.buffer_updated(count, now)
            got_zero += drain(zero_copy)
            copying.receive(chunk[:count], now)
            got_copy += drain(copying)
            chunk = chunk[count:]
        now += 0.001
    assert got_zero == got_copy == payloads
    for policy in (zero_copy, copying):
        policy.end_of_stream(now)
        assert CLOSE in acts(policy) and policy.error is None


@example(  # a drain asked for inside a frame: the read completing it must end with FIN
    payloads=[b"a" * 10, b"b" * 10],
    cuts=[5, 9],
    oversized_at_end=False,
    pauses=set(),
    drain_at=1,
    frame_timeout=None,
)
@given(
    payloads=st.lists(st.binary(max_size=300), max_size=80),
    cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=20),
    oversized_at_end=st.booleans(),
    pauses=st.sets(st.integers(min_value=0, max_value=20)),
    drain_at=st.one_of(st.none(), st.integers(min_value=1, max_value=8)),
    frame_timeout=st.sampled_from([TIMEOUT, None]),
)
def test_the_per_read_fast_path_delivers_and_acts_as_the_general_path(
    payloads: list[bytes],
    cuts: list[int],
    oversized_at_end: bool,
    pauses: set[int],
    drain_at: int | None,
    frame_timeout: float | None,
) -> None:
    """read_ready() hands some reads' frames over at once instead of holding
    them: the frames, when they go out, and every action must be the same."""
    wire = bytes(encode_frames(payloads)) + (b"\xff\xff\xff\xff" if oversized_at_end else b"")
    fast, _ = make(max_frame=1000, frame_timeout=frame_timeout)
    general, _ = make(max_frame=1000, frame_timeout=frame_timeout)
    got: dict[str, list[tuple[int, bytes]]] = {"fast": [], "general": []}  # (step, frame)
    did: dict[str, list[Action]] = {"fast": [], "general": []}
    pos, now, paused = 0, 0.0, False
    for step, size in enumerate([*cuts, len(wire)]):
        chunk = wire[pos : pos + size]
        pos += len(chunk)
        resume, paused = paused and step not in pauses, step in pauses
        for name, policy in (("fast", fast), ("general", general)):
            if paused:
                policy.writes_paused()
            elif resume:
                policy.writes_resumed(now)
                got[name] += [(step, f) for f in drain(policy)]
            if step == drain_at:
                policy.shutdown_requested(now)
                got[name] += [(step, f) for f in drain(policy)]
            rest = chunk
            while rest and policy.reading:
                room = policy.get_buffer(len(rest))
                count = min(len(room), len(rest))
                room[:count] = rest[:count]
                rest = rest[count:]
                if name == "general":
                    policy.buffer_updated(count, now)
                    got[name] += [(step, f) for f in drain(policy)]
                elif (frames := policy.read_ready(count, now)) is None:
                    got[name] += [(step, f) for f in drain(policy)]  # as FramedProtocol does
                else:
                    got[name] += [(step, bytes(f)) for f in frames]
            did[name] += acts(policy)
        now += 0.001
    assert got["fast"] == got["general"]
    assert did["fast"] == did["general"]
    assert fast.state is general.state
