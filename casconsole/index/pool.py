"""Reading package files for the indexer: in this process when there are few, else in a pool of
worker processes (fork where that is safe, a fresh interpreter otherwise), batched."""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from casconsole.index.events import ChannelError
from casconsole.index.read import ReadResult, read_batch, read_package

# below these, reading in this process beats starting a pool
_INLINE_MAX_FILES = 8
_INLINE_MAX_BYTES = 16 << 20
_BATCH_MAX_FILES = 32
_BATCH_MAX_BYTES = 32 << 20

Todo = tuple[str, str, int]  # subdir, file name, size


def _worker_init() -> None:
    # Ctrl-C is the parent's to handle: workers stay quiet instead of printing tracebacks
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold SIGINT back while worker processes are forked: a Ctrl-C landing in one of fork's
    own handlers would be swallowed there (printed as "Exception ignored", the run going on);
    held, it lands right after, as a KeyboardInterrupt like any other."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _pool_context(fork: bool = True) -> multiprocessing.context.BaseContext:
    """fork where it is safe (Linux, no other thread: workers start at once, with nothing to
    import), else a fresh interpreter: the console indexes from a thread, and forking a threaded
    process can deadlock the child on a lock some other thread held (`fork=False`: threads this
    module cannot see, a bucket client's, are running)."""
    if fork and sys.platform.startswith("linux") and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context("spawn")


def batches(todo: list[Todo], max_files: int, max_bytes: int) -> list[list[Todo]]:
    """`todo` cut in order into batches of at most `max_files` files and `max_bytes` bytes (a
    single larger file makes a batch of its own)."""
    cut: list[list[Todo]] = []
    current: list[Todo] = []
    current_bytes = 0
    for item in todo:
        if current and (len(current) >= max_files or current_bytes + item[2] > max_bytes):
            cut.append(current)
            current, current_bytes = [], 0
        current.append(item)
        current_bytes += item[2]
    if current:
        cut.append(current)
    return cut


def read_all(
    channel: Path,
    todo: list[Todo],
    workers: int,
    on_result: Callable[[Todo, ReadResult | None], None],
    fork: bool = True,
) -> None:
    """Read `todo`, calling `on_result` in this thread as each file is done."""
    small = len(todo) <= _INLINE_MAX_FILES and sum(t[2] for t in todo) <= _INLINE_MAX_BYTES
    if workers <= 1 or small:
        for item in todo:
            on_result(item, read_package(str(channel / item[0] / item[1]), item[0]))
        return
    per_batch = max(1, min(_BATCH_MAX_FILES, len(todo) // (workers * 4)))
    cut = batches(todo, per_batch, _BATCH_MAX_BYTES)
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(cut)),
        mp_context=_pool_context(fork),
        initializer=_worker_init,
    )
    try:
        with _interrupts_held():  # the first submit forks the workers
            futures = {
                pool.submit(read_batch, [(str(channel / s / fn), s) for s, fn, _ in batch]): batch
                for batch in cut
            }
        for future in as_completed(futures):
            for item, result in zip(futures[future], future.result(), strict=True):
                on_result(item, result)
    except BrokenProcessPool as exc:
        raise ChannelError(
            f"{channel}: a package reader process died ({exc}); "
            "run again with one worker to find the file that kills it"
        ) from exc
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
