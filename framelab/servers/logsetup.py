"""Server logging that never blocks the event loop and cannot be flooded.

A write to stderr blocks when stderr is a pipe its reader drains slowly (a
log shipper, a container runtime under load): done on the loop, one slow
reader stops the server answering everyone. So records take this path:

    logger -> PeerWarningLimiter (filter) -> DroppingQueueHandler
           -> bounded queue -> QueueListener thread -> FdWriter (os.write)

- The loop only formats the record and puts it in the queue without waiting;
  when the queue is full the record is dropped and counted, and the writer
  says "N log records dropped" before the next line it writes.
- The writer thread alone writes, with os.write on the descriptor (no
  buffered stream, no handler lock): a blocked write blocks only that thread,
  and nothing at exit waits for it (the thread is a daemon; flushing stderr
  finds nothing buffered).
- Warnings a peer can cause again and again (bad frames, refusals at the
  cap) are limited per kind: the first BURST of a kind in each WINDOW are
  written, the rest counted and summed up once the window ends ("N more like
  this in the last 10 s"). A kind is the logger, the message template and
  the types of its exception arguments.

Cost: per record, one format in the loop thread and a non-blocking put;
memory at most `capacity` records; the limiter keeps one small entry per
kind (kinds are templates in our code, a bounded set).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
CAPACITY = 10_000  # records waiting for the writer thread
BURST = 5  # records of one kind written per window
WINDOW = 10.0  # seconds
TICK = 1.0  # how often the writer looks for windows that have ended
MAX_KINDS = 1000  # beyond this many kinds at once, the rest share one budget

Kind = tuple[str, str, tuple[str, ...]]
OTHER_KINDS: Kind = ("", "", ())


def kind_of(record: logging.LogRecord) -> Kind:
    args = record.args if isinstance(record.args, tuple) else ()
    error_types = tuple(type(a).__name__ for a in args if isinstance(a, BaseException))
    return record.name, str(record.msg), error_types


@dataclass
class _Budget:
    started: float
    written: int = 0
    suppressed: int = 0
    example: str = ""


@dataclass
class PeerWarningLimiter(logging.Filter):
    """Lets through BURST warnings of each kind per WINDOW seconds; counts the
    rest. `due()` returns the summaries of windows that have ended, as
    records, for the writer to write. Thread-safe (the loop filters, the
    writer thread collects)."""

    burst: int = BURST
    window: float = WINDOW
    clock: Callable[[], float] = time.monotonic
    max_kinds: int = MAX_KINDS
    _budgets: dict[Kind, _Budget] = field(default_factory=dict)
    _ended: list[tuple[Kind, _Budget]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        super().__init__()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        now = self.clock()
        kind = kind_of(record)
        with self._lock:
            if kind not in self._budgets and len(self._budgets) >= self.max_kinds:
                kind = OTHER_KINDS  # messages built without a template: one budget
            budget = self._budgets.get(kind)
            if budget is not None and now - budget.started >= self.window:
                if budget.suppressed:
                    self._ended.append((kind, budget))
                budget = None
            if budget is None:
                budget = self._budgets[kind] = _Budget(now)
            if budget.written < self.burst:
                budget.written += 1
                return True
            if not budget.suppressed:
                budget.example = record.getMessage()
            budget.suppressed += 1
            return False

    def due(self) -> list[logging.LogRecord]:
        """Summaries for every window that has ended with records suppressed."""
        now = self.clock()
        with self._lock:
            ended, self._ended = self._ended, []
            for kind, budget in list(self._budgets.items()):
                if now - budget.started >= self.window:
                    del self._budgets[kind]
                    if budget.suppressed:
                        ended.append((kind, budget))
        return [self._summary(kind, budget) for kind, budget in ended]

    def flush(self) -> list[logging.LogRecord]:
        """Summaries for every window, ended or not (at exit)."""
        with self._lock:
            ended = [*self._ended, *self._budgets.items()]
            self._ended, self._budgets = [], {}
        return [self._summary(k, b) for k, b in ended if b.suppressed]

    def _summary(self, kind: Kind, budget: _Budget) -> logging.LogRecord:
        return logging.LogRecord(
            kind[0],
            logging.WARNING,
            __file__,
            0,
            "%d more like this in the last %g s (the first: %s)",
            (budget.suppressed, self.window, budget.example),
            None,
        )


class DroppingQueueHandler(logging.handlers.QueueHandler):
    """QueueHandler that never waits: a full queue drops the record, counted."""

    def __init__(self, records: queue.Queue[logging.LogRecord | None]) -> None:
        super().__init__(records)
        self.dropped = 0
        self._count_lock = threading.Lock()
        self.on_drop: Callable[[], None] | None = None

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            with self._count_lock:
                self.dropped += 1
            if self.on_drop is not None:
                self.on_drop()


class FdWriter(logging.Handler):
    """Writes formatted records with os.write on one descriptor, from the
    writer thread only (so no lock: a lock held in a blocked write would
    make logging.shutdown() at exit wait for the reader)."""

    def __init__(self, fd: int, pipeline: LogPipeline) -> None:
        super().__init__()
        self.fd = fd
        self.pipeline = pipeline
        self.reported_drops = 0
        self.setFormatter(logging.Formatter(FORMAT))

    def createLock(self) -> None:
        self.lock = None  # one thread writes

    def handle(self, record: logging.LogRecord) -> bool:
        records = self.pipeline.limiter.due() if record.msg is _TICK else [record]
        dropped = self.pipeline.dropped
        if dropped > self.reported_drops:
            self._write(f"{dropped - self.reported_drops} log records dropped (queue full)")
            self.reported_drops = dropped
        for each in records:
            self._write(self.format(each))
        return True

    def _write(self, line: str) -> None:
        data = (line + "\n").encode("utf-8", "replace")
        try:
            while data:
                data = data[os.write(self.fd, data) :]
        except OSError:  # the reader is gone: nothing to tell it
            pass

    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - handle() writes
        self._write(self.format(record))

    def flush(self) -> None:
        pass


_TICK = "framelab: look for ended windows"  # the msg of the writer's periodic record


def tick() -> logging.LogRecord:
    return logging.LogRecord("", 0, "", 0, _TICK, None, None)


class _Receiving:
    """The queue as the listener sees it: get() only. Without task_done()
    QueueListener does not count records, and the ticks it receives that
    never went through the queue cannot unbalance the count."""

    def __init__(self, records: queue.Queue[logging.LogRecord | None]) -> None:
        self.get = records.get


class _TickingListener(logging.handlers.QueueListener):
    """QueueListener whose thread wakes every TICK seconds even when idle."""

    def __init__(
        self, records: queue.Queue[logging.LogRecord | None], handler: logging.Handler
    ) -> None:
        super().__init__(_Receiving(records), handler)  # type: ignore[arg-type]
        self.records = records

    def dequeue(self, block: bool) -> logging.LogRecord:
        try:
            record = self.records.get(block, timeout=TICK)
        except queue.Empty:
            return tick()
        return record  # type: ignore[return-value]  # None: the sentinel, ends _monitor

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


class LogPipeline:
    """The installed path: `install()` builds it, `close()` takes it down."""

    def __init__(
        self,
        level: int,
        fd: int,
        capacity: int,
        limiter: PeerWarningLimiter,
        logger: logging.Logger,
    ) -> None:
        self.logger = logger
        self.records: queue.Queue[logging.LogRecord | None] = queue.Queue(capacity)
        self.limiter = limiter
        self.handler = DroppingQueueHandler(self.records)  # formats the message only
        self.handler.addFilter(limiter)
        self.writer = FdWriter(fd, self)
        self.listener = _TickingListener(self.records, self.writer)
        self.level = level

    @property
    def dropped(self) -> int:
        return self.handler.dropped

    def close(self, timeout: float = 1.0) -> None:
        """Write what is queued and the last summaries, within `timeout`
        (a reader that never reads gets nothing more)."""
        self.logger.removeHandler(self.handler)
        for summary in self.limiter.flush():
            self.handler.enqueue(summary)
        listener_thread = self.listener._thread
        try:
            self.records.put_nowait(None)  # QueueListener's sentinel
        except queue.Full:
            return
        if listener_thread is not None:
            listener_thread.join(timeout)
        if listener_thread is not None and listener_thread.is_alive():
            return
        self.listener._thread = None
        if self.handler.dropped > self.writer.reported_drops:  # drops after the last line
            self.writer.handle(tick())


def stderr_fd() -> int:
    """sys.stderr's descriptor; 2 when it was replaced by an object without one."""
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return 2


def install(
    level: int = logging.INFO,
    stream: int | None = None,
    capacity: int = CAPACITY,
    limiter: PeerWarningLimiter | None = None,
    logger: logging.Logger | None = None,
) -> LogPipeline:
    """Route `logger` (the root logger by default) through the pipeline;
    records go to `stream` (a descriptor, stderr by default). Replaces any
    handler installed on it before."""
    fd = stderr_fd() if stream is None else stream
    target = logging.getLogger() if logger is None else logger
    pipeline = LogPipeline(level, fd, capacity, limiter or PeerWarningLimiter(), target)
    for old in list(target.handlers):
        target.removeHandler(old)
    target.addHandler(pipeline.handler)
    target.setLevel(level)
    pipeline.listener.start()
    return pipeline
