"""Short database calls (reads, connection tests, depopulate) off the GUI thread.

``qsnap-gui`` runs under a qasync event loop, so reads could be awaited with
``loop.run_in_executor``. They run as Workers on a small pool of their own instead (so a long
job never delays a read), handing their result back through a signal: pytest-qt drives a plain
Qt event loop in which awaiting is awkward, and a worker behaves the same under both loops, so
the window's reads are tested exactly as they run. Errors reach the caller as one masked line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject
from sqlalchemy.engine import URL

from qsnap_gui.engine.runner import error_line
from qsnap_gui.store.dsn import mask_text
from qsnap_gui.ui.workers import WorkerPool


def error_text(exc: BaseException, secret: URL | None = None) -> str:
    """One line an operator can act on; the password is masked, no traceback."""
    return mask_text(error_line(exc), secret)


class TaskRunner(QObject):
    """Runs callables on its own pool; a newer call with the same key makes older results moot."""

    def __init__(self, parent: QObject | None = None, threads: int = 2) -> None:
        super().__init__(parent)
        self.secret: URL | None = None
        self._pool = WorkerPool("reads", threads, self)
        self._latest: dict[str, int] = {}
        self._pending: dict[int, str] = {}

    def run(
        self,
        key: str,
        fn: Callable[[], Any],
        on_done: Callable[[Any], None],
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        token = 0

        def done(result: Any) -> None:
            if self._settle(key, token):
                on_done(result)

        def failed(exc: BaseException) -> None:
            if self._settle(key, token) and on_error:
                on_error(error_text(exc, self.secret))

        token = self._pool.start(fn, done, failed)
        self._latest[key] = token
        self._pending[token] = key

    def busy(self, key: str | None = None) -> bool:
        return any(key is None or k == key for k in self._pending.values())

    def wait(self, timeout_ms: int) -> bool:
        return self._pool.wait(timeout_ms / 1000)

    def _settle(self, key: str, token: int) -> bool:
        """Forget the call; True when it is still the newest of its key."""
        self._pending.pop(token, None)
        if self._latest.get(key) != token:
            return False
        del self._latest[key]
        return True
