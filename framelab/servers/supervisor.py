"""`framelab serve`: a supervisor process and its workers, one listener.

The supervisor binds the listening socket once and starts --workers fresh
interpreters (servers/worker.py) that inherit it: all accept from one
kernel queue. It serves no connection itself; it starts, replaces and
restarts workers, and forwards stops.

Why one inherited listener rather than one SO_REUSEPORT listener per
worker: in a reuseport group the kernel hashes each new connection to one
listener's own queue, and closing that listener resets every connection
still in its queue (the client sees ECONNRESET after a completed
handshake), unless net.ipv4.tcp_migrate_req=1 moves them to another
listener of the group. A restart that starts a new worker and then closes
the old one's listener therefore loses whatever was queued there at that
instant (`framelab experiment run reuseport` shows both cases). With one
shared queue a worker that stops accepting simply leaves the queue to the
others, whatever that sysctl says.

Signals to the supervisor:
- SIGTERM / SIGINT: graceful stop. Every worker refuses new handshakes,
  serves its accept queue and its connections (servers/runner.py), exits;
  a second signal aborts them. Exit status 0 only if every worker exited 0.
- SIGHUP: rolling restart. With --config the file is read again first: if
  it is valid the new workers run with what it says now; if not, nothing is
  restarted (one log line says why) and the old workers keep serving.
  Settings of the listener itself (LISTENER_SETTINGS) cannot change without
  a new one: a change to them is logged as needing a full restart and kept
  as it was. Then one slot at a time: start a new worker, wait until it
  accepts, then retire the old one (SIGUSR2: stop accepting, leave the
  queue, finish its connections). A replacement that fails to start is
  killed and the old worker kept.
- A worker that dies unexpectedly is restarted after a back-off
  (servers/supervision.py), logged with its exit status.
Workers run in their own process group (a Ctrl-C at a terminal reaches the
supervisor only) and die with it (PR_SET_PDEATHSIG), even after SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from framelab.common.argtypes import address
from framelab.servers import worker as worker_process
from framelab.servers.config import ServerConfig
from framelab.servers.config_file import ConfigError
from framelab.servers.drain import accept_new_handshakes
from framelab.servers.runner import bind_listener, ensure_fd_headroom
from framelab.servers.supervision import BackOff, describe_status

if TYPE_CHECKING:
    from framelab.servers.metrics import ServerMetrics

log = logging.getLogger("framelab.supervisor")
Ready = Callable[[str, int], None]
#: reads the configuration anew at SIGHUP (ConfigError if it cannot be used)
Reload = Callable[[], ServerConfig]
#: what the supervisor set up once (the listener, the worker slots, the
#: metrics endpoint): a SIGHUP cannot change them
LISTENER_SETTINGS = ("host", "port", "backlog", "reuse_port", "workers", "metrics_port")
START_TIMEOUT = 30.0  # seconds a new worker may take to accept


def print_ready(host: str, port: int) -> None:
    print(f"listening on {address(host, port)}", flush=True)


@dataclass(eq=False)
class Worker:
    slot: int
    proc: subprocess.Popen[bytes]
    started: float
    ready: asyncio.Future[bool]
    exited: asyncio.Future[int]
    retiring: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        if not self.exited.done():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)


@dataclass
class Supervisor:
    config: ServerConfig
    log_level: str = "INFO"
    on_ready: Ready = print_ready
    reload: Reload | None = None
    listener: socket.socket | None = None
    slots: list[Worker | None] = field(default_factory=list)
    live: set[Worker] = field(default_factory=set)
    stopping: bool = False
    stop_codes: dict[int, int] = field(default_factory=dict)
    metrics: ServerMetrics | None = None
    _env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    _backoff: list[BackOff] = field(default_factory=list)
    _restarts: dict[int, asyncio.TimerHandle] = field(default_factory=dict)
    _rolling: asyncio.Task[None] | None = None
    _again: bool = False
    _all_exited: asyncio.Event = field(default_factory=asyncio.Event)

    # -- life cycle ------------------------------------------------------
    async def run(self) -> int:
        ensure_fd_headroom(self.config.max_connections)  # inherited by the workers
        listener = self.listener = bind_listener(self.config)
        listener.listen(self.config.backlog)
        host, port = listener.getsockname()[:2]
        count = self.config.workers
        self.slots = [None] * count
        self._backoff = [BackOff() for _ in range(count)]
        starting = [self._spawn(slot) for slot in range(count)]
        ready = await asyncio.gather(*(self._wait_ready(w) for w in starting))
        if not all(ready):
            log.error("%d of %d workers did not start; stopping", ready.count(False), count)
            self._begin_stop()
            await self._all_exited.wait()
            return 1
        self.slots = list(starting)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGHUP, self._on_hangup)
        log.info(
            "%d worker%s on %s:%d: pids %s",
            count,
            "" if count == 1 else "s",
            host,
            port,
            ", ".join(str(w.pid) for w in starting),
        )
        self.on_ready(host, port)
        await self._all_exited.wait()
        listener.close()
        bad = {pid: code for pid, code in self.stop_codes.items() if code != 0}
        if bad:
            log.warning(
                "%d of %d workers did not stop cleanly: %s",
                len(bad),
                len(self.stop_codes),
                ", ".join(f"pid {pid} {describe_status(c)}" for pid, c in bad.items()),
            )
            return 1
        log.info("all %d workers stopped cleanly", len(self.stop_codes))
        return 0

    def _spawn(self, slot: int) -> Worker:
        assert self.listener is not None
        loop = asyncio.get_running_loop()
        ready_r, ready_w = os.pipe()
        listen_fd = self.listener.fileno()
        argv = worker_process.command(self.config, listen_fd, ready_w, self.log_level, slot)
        # the child inherits these blocked: a stop during its start waits for its loop
        held = signal.pthread_sigmask(signal.SIG_BLOCK, worker_process.STOP_SIGNALS)
        try:
            proc = subprocess.Popen(
                argv,
                pass_fds=(listen_fd, ready_w),
                stdin=subprocess.DEVNULL,
                env=self._env,
                process_group=0,  # a terminal's Ctrl-C goes to the supervisor only
            )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            os.close(ready_w)
        worker = Worker(slot, proc, time.monotonic(), loop.create_future(), loop.create_future())
        self.live.add(worker)
        loop.add_reader(ready_r, self._on_ready_line, worker, ready_r)
        pidfd = os.pidfd_open(proc.pid)
        loop.add_reader(pidfd, self._on_exit, worker, pidfd)
        return worker

    async def _wait_ready(self, worker: Worker) -> bool:
        try:
            return await asyncio.wait_for(asyncio.shield(worker.ready), START_TIMEOUT)
        except TimeoutError:
            log.error(
                "worker %d (pid %d) not accepting after %g s",
                worker.slot,
                worker.pid,
                START_TIMEOUT,
            )
            worker.signal(signal.SIGKILL)
            return False

    # -- events ----------------------------------------------------------
    def _on_ready_line(self, worker: Worker, fd: int) -> None:
        line = b""
        with contextlib.suppress(OSError):
            line = os.read(fd, 64)
        asyncio.get_running_loop().remove_reader(fd)
        os.close(fd)
        if not worker.ready.done():
            worker.ready.set_result(line == worker_process.READY_LINE)

    def _on_exit(self, worker: Worker, pidfd: int) -> None:
        asyncio.get_running_loop().remove_reader(pidfd)
        os.close(pidfd)
        code = worker.proc.wait()  # it has exited: reaps at once
        self.live.discard(worker)
        worker.exited.set_result(code)
        if not worker.ready.done():
            worker.ready.set_result(False)
        if self.metrics is not None:
            from framelab.servers.metrics import process_exited

            process_exited(worker.pid)
        status = describe_status(code)
        if self.stopping or worker.retiring:
            self.stop_codes[worker.pid] = code
            how = log.info if code == 0 else log.warning
            how("worker %d (pid %d) stopped: %s", worker.slot, worker.pid, status)
        elif self.slots[worker.slot] is worker:
            ran_for = time.monotonic() - worker.started
            delay = self._backoff[worker.slot].after_death(ran_for)
            log.warning(
                "worker %d (pid %d) died unexpectedly after %.1f s: %s; restarting in %.1f s",
                worker.slot,
                worker.pid,
                ran_for,
                status,
                delay,
            )
            loop = asyncio.get_running_loop()
            self._restarts[worker.slot] = loop.call_later(delay, self._restart, worker.slot)
        else:
            log.warning("worker %d: replacement pid %d exited: %s", worker.slot, worker.pid, status)
        if self.stopping and not self.live:
            self._all_exited.set()

    def _restart(self, slot: int) -> None:
        self._restarts.pop(slot, None)
        if self.stopping:
            return
        assert self.listener is not None
        accept_new_handshakes(self.listener)  # a worker stopped by hand may have refused them
        worker = self.slots[slot] = self._spawn(slot)
        if self.metrics is not None:
            self.metrics.worker_restarts.inc()
        log.info("worker %d restarted: pid %d", slot, worker.pid)

    def _on_hangup(self) -> None:
        if self.stopping:
            return
        if self._rolling is not None and not self._rolling.done():
            log.info("SIGHUP during a rolling restart: another one follows it")
            self._again = True
            return
        self._rolling = asyncio.ensure_future(self._rolling_restart())

    async def _rolling_restart(self) -> None:
        while True:
            self._again = False
            previous = self.config
            if not self._reload_config():
                return
            log.info("SIGHUP: replacing %d workers one at a time", len(self.slots))
            for slot in range(len(self.slots)):
                if self.stopping:
                    return
                if not await self._replace(slot):
                    if slot == 0 and self.config is not previous:
                        log.error("SIGHUP: the new config was not applied; keeping the old one")
                        self.config = previous
                    return
            log.info(
                "rolling restart done: pids %s",
                ", ".join(str(w.pid) for w in self.slots if w is not None),
            )
            if not self._again:
                return

    def _reload_config(self) -> bool:
        """Read the configuration anew (with --config): True if the restart
        may go on, with self.config what the new workers get."""
        if self.reload is None:
            return True  # the command line's configuration, as at start
        try:
            wanted = self.reload()
        except ConfigError as error:
            log.error("SIGHUP refused, the workers keep serving as they are: %s", error)
            return False
        kept = {}
        for name in LISTENER_SETTINGS:
            now, then = getattr(self.config, name), getattr(wanted, name)
            if now != then:
                log.warning(
                    "SIGHUP: %s %r -> %r needs a full restart; keeping %r",
                    name,
                    now,
                    then,
                    now,
                )
                kept[name] = now
        wanted = dataclasses.replace(wanted, **kept)
        changes = [
            f"{f.name} {getattr(self.config, f.name)!r} -> {getattr(wanted, f.name)!r}"
            for f in dataclasses.fields(ServerConfig)
            if getattr(self.config, f.name) != getattr(wanted, f.name)
        ]
        log.info("SIGHUP: config reloaded: %s", ", ".join(changes) or "no change")
        self.config = wanted
        return True

    async def _replace(self, slot: int) -> bool:
        old = self.slots[slot]
        new = self._spawn(slot)
        if not await self._wait_ready(new) or self.stopping:
            if not self.stopping:
                log.error(
                    "worker %d: the replacement (pid %d) did not start; keeping pid %s",
                    slot,
                    new.pid,
                    old.pid if old is not None else "none",
                )
            new.signal(signal.SIGTERM)
            return False
        pending = self._restarts.pop(slot, None)
        if pending is not None:  # the old one had died: this is its restart
            pending.cancel()
        self.slots[slot] = new
        if old is not None and not old.exited.done():
            old.retiring = True
            old.signal(signal.SIGUSR2)  # stop accepting, leave the queue, finish
        log.info("worker %d: pid %s replaced by pid %d", slot, old.pid if old else "none", new.pid)
        return True

    def _on_stop_signal(self) -> None:
        if self.stopping:
            log.warning("second signal: aborting %d workers", len(self.live))
            for worker in list(self.live):
                worker.signal(signal.SIGTERM)  # a worker's second stop request aborts
            return
        log.info("stopping %d workers", len(self.live))
        self._begin_stop()

    def _begin_stop(self) -> None:
        self.stopping = True
        for handle in self._restarts.values():
            handle.cancel()
        self._restarts.clear()
        for worker in list(self.live):
            if not worker.retiring:  # retiring ones are stopping already
                worker.signal(signal.SIGTERM)
        if not self.live:
            self._all_exited.set()


def run(
    config: ServerConfig,
    log_level: str = "INFO",
    ready: Ready = print_ready,
    reload: Reload | None = None,
) -> int:
    """The `framelab serve` entry point: supervise config.workers workers;
    `reload` reads the configuration anew at each SIGHUP."""
    supervisor = Supervisor(config, log_level, ready, reload)
    metrics_dir = None
    if config.metrics_port is not None:
        metrics_dir = tempfile.mkdtemp(prefix="framelab-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # before the client is imported
        supervisor._env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        from framelab.servers.metrics import ServerMetrics, serve_all_workers

        supervisor.metrics = ServerMetrics()
        bound = serve_all_workers(config.metrics_port, metrics_dir)
        log.info("metrics on http://127.0.0.1:%d/metrics", bound)
    try:
        return asyncio.run(supervisor.run())
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
