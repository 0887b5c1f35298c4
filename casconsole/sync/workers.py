"""Download worker processes: the sync's Fetchers run in a few child processes, not one.

Why: one Python process downloading with threads is bound by its GIL (the HTTP parsing, the
per-chunk bookkeeping), and its threads then spend their time handing the GIL back and forth.
Measured on 2 cores (bench/sync): two processes of four threads fetch the same files 1.5 to
2.5 times faster than one process of eight.

Each worker is `python -m casconsole.sync.workers`, started with a clean interpreter (no fork
of a process that may run a UI). The parent talks to it over its stdin / stdout with
`multiprocessing.connection` messages:

    parent -> worker   ("config", WorkerConfig) first, then ("jobs", [(id, FileJob.wire()), ...])
                       ..., ("stop",) when no more jobs will come, ("cancel",) to stop at once
    worker -> parent   ("event", Event) progress and retries, ("done", id, Outcome.wire()),
                       ("cancelled", id), ("error", id, traceback), ("bye",) last

Each message is one `pickle.dumps` sent with `send_bytes`: `Connection.send` made a
ForkingPickler (copying its dispatch table) for every message, a seventh of a worker's CPU on
3,000 small files; jobs and outcomes travel as plain tuples.

A worker that loses its parent (the sync killed, SIGKILL included) sees its stdin close and
stops at once, like a cancel. Workers hold a shared lock on `.cas/sync-workers.lock` while
they live; a new sync takes that lock exclusively before starting its own workers, so it never
runs beside the orphans of a killed one. Workers ignore SIGINT and SIGHUP: the sync (their
parent) decides, and tells them.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import pickle
import queue
import selectors
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from casconsole.errors import Cancelled, CasError
from casconsole.events import Event
from casconsole.sync.fetch import Fetcher, FileJob, Outcome
from casconsole.upstream.policy import NetworkPolicy

ORPHANS_WAIT = 60.0  # seconds a new sync waits for the workers of a killed one to go


@dataclass(frozen=True)
class WorkerConfig:
    policy: NetworkPolicy  # the settings' network policy, as the repodata fetcher has it
    threads: int
    lock_path: str
    bucket: object = None  # storage.s3.S3Config of a bucket mirror: verified files are uploaded


class WorkerDied(CasError):
    """A worker process ended without being asked to (a bug, or killed from outside)."""


# ---------------------------------------------------------------- the parent's side


def plan_processes(concurrency: int, jobs: int | None) -> tuple[int, int]:
    """(processes, threads each) for `concurrency` downloads at a time (of `jobs`, if known)."""
    processes = max(1, min(os.cpu_count() or 1, 4, math.ceil(concurrency / 2), jobs or concurrency))
    return processes, math.ceil(concurrency / processes)


def wait_for_orphans(lock_path: Path, seconds: float = ORPHANS_WAIT) -> None:
    """Return once no worker of an earlier sync is alive (they hold the lock shared)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + seconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise OSError(f"download workers of an earlier sync still hold {lock_path}") from None
                time.sleep(0.05)
    finally:
        os.close(fd)  # drops the lock: this sync's workers take it shared


class _Worker:
    def __init__(self, process: subprocess.Popen, inbox: Connection, outbox: Connection):
        self.process = process
        self.inbox = inbox  # parent -> worker
        self.outbox = outbox  # worker -> parent
        self.in_flight: set[int] = set()
        self.said_bye = False
        self.stopped = False


class WorkerPool:
    """Runs FileJobs in worker processes; `results()` yields each Outcome as it arrives.

    Events from the workers go to `emit`, from the thread that iterates `results()`.
    `cancel` (a threading.Event) is watched: once set, the workers are told to stop.
    """

    def __init__(
        self, config: WorkerConfig, processes: int, emit: Callable[[Event], None], cancel: threading.Event
    ):
        self.config = config
        self.processes = processes
        self.emit = emit
        self.cancel_event = cancel
        self.workers: list[_Worker] = []

    def start(self) -> WorkerPool:
        wait_for_orphans(Path(self.config.lock_path))
        for _ in range(self.processes):
            process = subprocess.Popen(
                [sys.executable, "-m", "casconsole.sync.workers"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                close_fds=True,
            )
            assert process.stdin is not None and process.stdout is not None
            inbox = Connection(os.dup(process.stdin.fileno()), readable=False)
            outbox = Connection(os.dup(process.stdout.fileno()), writable=False)
            process.stdin.close()
            process.stdout.close()
            _put(inbox, ("config", self.config))
            self.workers.append(_Worker(process, inbox, outbox))
        return self

    def results(self, jobs: list[FileJob]) -> Iterator[tuple[FileJob, Outcome | None]]:
        """Each job with its Outcome (None when cancelled), as they finish."""
        todo = deque(enumerate(jobs))
        # jobs handed to a worker ahead of its threads, topped up in batches once half are
        # done: waking a worker costs more than the message (a third of the parent's time
        # went to one message a job)
        credit = 4 * self.config.threads
        cancelling = False
        for worker in self.workers:
            self._feed(worker, todo, jobs, credit)
        live = {worker.outbox: worker for worker in self.workers}
        # one selector for the whole run: multiprocessing's wait() makes and fills a new one
        # each call, 4% of the parent's time at a few thousand files
        selector = selectors.DefaultSelector()
        for conn in live:
            selector.register(conn, selectors.EVENT_READ)
        try:
            while live:
                if self.cancel_event.is_set() and not cancelling:
                    cancelling = True
                    for worker in live.values():
                        self._send(worker, ("cancel",))
                for key, _ in selector.select(timeout=0.25):
                    conn = key.fileobj
                    worker = live[conn]  # type: ignore[index]
                    try:
                        message = _get(conn)  # type: ignore[arg-type]
                    except (EOFError, OSError):
                        del live[conn]  # type: ignore[arg-type]
                        selector.unregister(conn)
                        if not worker.said_bye:
                            code = worker.process.wait()
                            if not cancelling:
                                raise WorkerDied(
                                    f"a download worker ended unexpectedly (exit status {code})"
                                ) from None
                            for job_id in worker.in_flight:
                                yield jobs[job_id], None
                        continue
                    kind = message[0]
                    if kind == "event":
                        self.emit(message[1])
                    elif kind in ("done", "cancelled"):
                        job_id = message[1]
                        worker.in_flight.discard(job_id)
                        job = jobs[job_id]
                        yield job, (Outcome.from_wire(job, message[2]) if kind == "done" else None)
                        if not cancelling:
                            self._feed(worker, todo, jobs, credit)
                    elif kind == "error":
                        raise WorkerDied(f"a download worker failed on {jobs[message[1]].fn}:\n{message[2]}")
                    elif kind == "bye":
                        worker.said_bye = True
        finally:
            selector.close()

    def _feed(self, worker: _Worker, todo: deque, jobs: list[FileJob], credit: int) -> None:
        if todo and len(worker.in_flight) <= credit // 2:
            batch = [todo.popleft() for _ in range(min(len(todo), credit - len(worker.in_flight)))]
            worker.in_flight.update(job_id for job_id, _ in batch)
            self._send(worker, ("jobs", [(job_id, job.wire()) for job_id, job in batch]))
        if not todo and not worker.stopped:
            worker.stopped = True
            self._send(worker, ("stop",))

    @staticmethod
    def _send(worker: _Worker, message: tuple) -> None:
        with contextlib.suppress(OSError):  # a worker gone already is seen on its outbox
            _put(worker.inbox, message)

    def close(self) -> None:
        """Stop every worker (cancelling what is in flight) and wait for them."""
        for worker in self.workers:
            self._send(worker, ("cancel",))
            with contextlib.suppress(OSError):
                worker.inbox.close()
        for worker in self.workers:
            try:
                worker.process.wait(30)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
            with contextlib.suppress(OSError):
                worker.outbox.close()
        self.workers = []


def _put(conn: Connection, message: tuple) -> None:
    conn.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))


def _get(conn: Connection) -> tuple:
    return pickle.loads(conn.recv_bytes())


# ---------------------------------------------------------------- the worker's side


def _serve(inbox: Connection, outbox: Connection) -> None:
    kind, config = _get(inbox)
    assert kind == "config" and isinstance(config, WorkerConfig)
    lock = os.open(config.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    fcntl.flock(lock, fcntl.LOCK_SH)  # held until this process ends

    send_lock = threading.Lock()

    def send(message: tuple) -> None:
        with send_lock, contextlib.suppress(OSError):
            _put(outbox, message)

    cancel = threading.Event()
    jobs: queue.SimpleQueue[tuple[int, FileJob] | None] = queue.SimpleQueue()
    uploader = None
    if config.bucket is not None:
        from casconsole.sync.upload import Uploader

        uploader = Uploader(config.bucket)
    fetcher = Fetcher(config.policy, lambda event: send(("event", event)), cancel, uploader)

    def fetch() -> None:
        while True:
            item = jobs.get()
            if item is None:
                fetcher.close_thread()
                return
            job_id, job = item
            if cancel.is_set():
                send(("cancelled", job_id))
                continue
            try:
                send(("done", job_id, fetcher.run(job).wire()))  # the parent has the job
            except Cancelled:
                send(("cancelled", job_id))
            except BaseException:
                send(("error", job_id, traceback.format_exc()))

    def listen() -> None:
        try:
            while True:
                message = _get(inbox)
                if message[0] == "jobs":
                    for job_id, wire in message[1]:
                        jobs.put((job_id, FileJob.from_wire(wire)))
                elif message[0] == "stop":
                    for _ in threads:
                        jobs.put(None)
                elif message[0] == "cancel":
                    break
        except (EOFError, OSError):
            pass  # the parent is gone: stop as for a cancel
        fetcher.cancel()
        for _ in threads:
            jobs.put(None)

    threads = [threading.Thread(target=fetch, name=f"fetch-{i}") for i in range(config.threads)]
    for thread in threads:
        thread.start()
    threading.Thread(target=listen, name="listen", daemon=True).start()
    for thread in threads:
        thread.join()
    fetcher.close()
    send(("bye",))


def main() -> int:
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    inbox = Connection(os.dup(0), writable=False)
    outbox = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # stray prints go to stderr, never into the message stream
    sys.stdout = sys.stderr
    _serve(inbox, outbox)
    return 0


if __name__ == "__main__":
    # run the copy imported under the module's own name: that is the one pickles refer to
    from casconsole.sync.workers import main as _main

    sys.exit(_main())
