"""The window's one worker type: a QRunnable that runs a plain callable on a pool it belongs to.

superqt's thread workers and vorta's job manager, reduced to what qsnap needs: each pool owns
its QThreadPool and one signals object made on the GUI thread (so workers may be started from
any thread: the job runner starts a refresh's last step from the thread of its last band job);
live workers stay referenced until their end has been delivered; closing waits for them. Every
pool is registered, so that tests can check that none is left with running work.
"""

from __future__ import annotations

import itertools
import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

import shiboken6
from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot

log = logging.getLogger(__name__)

DoneFn = Callable[[Any], None]
ErrorFn = Callable[[BaseException], None]


class _PoolSignals(QObject):
    returned = Signal(int, object)
    errored = Signal(int, object)


class Worker(QRunnable):
    """Runs ``fn`` once and reports its result or exception through the pool's signals."""

    def __init__(self, token: int, fn: Callable[[], Any], signals: _PoolSignals) -> None:
        super().__init__()
        self.token = token
        self.fn = fn
        self.signals = signals

    def run(self) -> None:
        try:
            result = self.fn()
        except Exception as exc:
            log.debug("worker %s raised", self.token, exc_info=True)
            self.signals.errored.emit(self.token, exc)
            return
        self.signals.returned.emit(self.token, result)


class WorkerPool(QObject):
    """A named QThreadPool of Workers; ``start`` is safe from any thread."""

    _pools: weakref.WeakSet[WorkerPool] = weakref.WeakSet()

    def __init__(self, name: str, threads: int, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(max(1, threads))
        self._signals = _PoolSignals(self)
        self._signals.returned.connect(self._on_returned)
        self._signals.errored.connect(self._on_errored)
        self._tokens = itertools.count(1)
        self._lock = threading.Lock()
        self._live: dict[int, tuple[Worker, DoneFn | None, ErrorFn | None]] = {}
        WorkerPool._pools.add(self)

    @property
    def threads(self) -> int:
        return self._pool.maxThreadCount()

    @threads.setter
    def threads(self, value: int) -> None:
        self._pool.setMaxThreadCount(max(1, value))

    def start(
        self,
        fn: Callable[[], Any],
        on_done: DoneFn | None = None,
        on_error: ErrorFn | None = None,
    ) -> int:
        """Run ``fn`` on the pool; ``on_done``/``on_error`` are called on the GUI thread."""
        with self._lock:
            token = next(self._tokens)
            worker = Worker(token, fn, self._signals)
            self._live[token] = (worker, on_done, on_error)
        self._pool.start(worker)
        return token

    def busy(self) -> bool:
        with self._lock:
            return bool(self._live)

    def wait(self, timeout: float | None) -> bool:
        """Wait for the running work (the GUI thread waits here: nothing else runs meanwhile)."""
        return self._pool.waitForDone(-1 if timeout is None else int(timeout * 1000))

    def _take(self, token: int) -> tuple[Worker, DoneFn | None, ErrorFn | None] | None:
        with self._lock:
            return self._live.pop(token, None)

    @Slot(int, object)
    def _on_returned(self, token: int, result: object) -> None:
        entry = self._take(token)
        if entry and entry[1]:
            entry[1](result)

    @Slot(int, object)
    def _on_errored(self, token: int, exc: object) -> None:
        entry = self._take(token)
        if entry is None:
            return
        if entry[2]:
            entry[2](exc)
        else:
            log.error("%s: a worker failed: %s", self.name, exc)

    @classmethod
    def _existing(cls) -> list[WorkerPool]:
        """The pools whose Qt objects still exist (a deleted owner took its pool along)."""
        return [p for p in list(cls._pools) if shiboken6.isValid(p) and shiboken6.isValid(p._pool)]

    @classmethod
    def wait_all(cls, timeout: float) -> None:
        """Give every pool's running work up to ``timeout`` seconds to end."""
        for pool in cls._existing():
            pool.wait(timeout)

    @classmethod
    def running_anywhere(cls) -> list[str]:
        """Names of the pools that still run work (a test leaving work behind fails on this)."""
        return [p.name for p in cls._existing() if p._pool.activeThreadCount()]
