"""Short database calls (reads, connection tests, depopulate) off the GUI thread.

``qsnap-gui`` runs under a qasync event loop, so reads could be awaited with
``loop.run_in_executor``. They are QRunnables on a small pool instead, handing their result back
through a signal: pytest-qt drives a plain Qt event loop in which awaiting is awkward, and a
runnable behaves the same under both loops, so the window's reads are tested exactly as they
run. Errors cross the thread as one masked line of text, never as exception objects.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from qsnap_gui.domain.errors import QsnapError
from qsnap_gui.engine.snapshots import describe_failure
from qsnap_gui.store.dsn import mask_text


def error_text(exc: BaseException, secret: URL | None = None) -> str:
    """One line an operator can act on; the password is masked, no traceback."""
    if isinstance(exc, QsnapError):
        text = str(exc)
    elif isinstance(exc, DBAPIError):
        text = describe_failure(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return mask_text(text, secret)


class _TaskSignals(QObject):
    done = Signal(int, object)
    failed = Signal(int, str)


class _Task(QRunnable):
    def __init__(self, token: int, fn: Callable[[], Any], signals: _TaskSignals, secret) -> None:
        super().__init__()
        self.token = token
        self.fn = fn
        self.signals = signals
        self.secret = secret

    def run(self) -> None:
        try:
            result = self.fn()
        except Exception as exc:
            self.signals.failed.emit(self.token, error_text(exc, self.secret))
            return
        self.signals.done.emit(self.token, result)


class TaskRunner(QObject):
    """Runs callables on its own pool; a newer call with the same key makes older results moot."""

    def __init__(self, parent: QObject | None = None, threads: int = 2) -> None:
        super().__init__(parent)
        self.secret: URL | None = None
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(threads)
        self._tokens = itertools.count(1)
        self._latest: dict[str, int] = {}
        self._pending: dict[int, tuple[str, Callable, Callable | None, _TaskSignals, _Task]] = {}

    def run(
        self,
        key: str,
        fn: Callable[[], Any],
        on_done: Callable[[Any], None],
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        token = next(self._tokens)
        self._latest[key] = token
        signals = _TaskSignals(self)
        signals.done.connect(self._on_done)
        signals.failed.connect(self._on_failed)
        task = _Task(token, fn, signals, self.secret)
        self._pending[token] = (key, on_done, on_error, signals, task)
        self._pool.start(task)

    def busy(self, key: str | None = None) -> bool:
        return any(key is None or entry[0] == key for entry in self._pending.values())

    def wait(self, timeout_ms: int) -> bool:
        return self._pool.waitForDone(timeout_ms)

    def _take(self, token: int) -> tuple[str, Callable, Callable | None] | None:
        key, on_done, on_error, signals, _task = self._pending.pop(token)
        signals.deleteLater()
        if self._latest.get(key) != token:
            return None
        del self._latest[key]
        return key, on_done, on_error

    @Slot(int, object)
    def _on_done(self, token: int, result: object) -> None:
        entry = self._take(token)
        if entry:
            entry[1](result)

    @Slot(int, str)
    def _on_failed(self, token: int, message: str) -> None:
        entry = self._take(token)
        if entry and entry[2]:
            entry[2](message)
