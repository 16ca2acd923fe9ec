"""Where the job runner's work runs, and how much of it may run at once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Protocol

from sqlalchemy import Engine

from qsnap_gui.engine.snapshot_sql import WRITERS

# a relayed band job holds its own session and its writers' connections at once
CONNECTIONS_PER_JOB = 1 + WRITERS
# a refresh's lock session and membership session, and the window's reads
RESERVED_CONNECTIONS = 4


def thread_cap(engine: Engine, wanted: int) -> int:
    """How many jobs may run at once without exhausting the engine's connection pool.

    An exhausted pool makes a writer wait and then fail; sizing the threads from the pool
    keeps that from ever happening.
    """
    pool = engine.pool
    capacity = pool.size() + max(0, getattr(pool, "_max_overflow", 0))
    return max(1, min(wanted, (capacity - RESERVED_CONNECTIONS) // CONNECTIONS_PER_JOB))


class Executor(Protocol):
    """Where the runner's work runs: each call of ``start`` runs ``work`` once, on some thread."""

    def start(self, work: Callable[[], None]) -> None: ...

    def wait(self, timeout: float | None) -> bool: ...


class ThreadExecutor:
    """Plain threads for the command line: at most ``threads`` pieces of work at once."""

    def __init__(self, threads: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="qsnap")
        self._futures: set[Future] = set()
        self._lock = threading.Lock()

    def start(self, work: Callable[[], None]) -> None:
        future = self._pool.submit(work)
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: Future) -> None:
        with self._lock:
            self._futures.discard(future)

    def wait(self, timeout: float | None) -> bool:
        with self._lock:
            pending = set(self._futures)
        _done, not_done = wait(pending, timeout=timeout)
        if not not_done:
            self._pool.shutdown(wait=False)
        return not not_done
