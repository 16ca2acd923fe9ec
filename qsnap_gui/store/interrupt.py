"""Cancel the statement a connection is running as soon as the operator cancels the job.

A job checks its cancel flag between batches; a statement that waits on a lock or computes for
minutes would otherwise hold Cancel up until it ends.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from sqlalchemy import Connection, text

from qsnap_gui.domain.jobs import CancelFlag


def cancel_statement(conn: Connection) -> None:
    """Ask the server to cancel what ``conn`` runs now; nothing happens if it runs nothing."""
    if conn.closed or conn.invalidated:
        return
    with contextlib.suppress(Exception):
        conn.connection.dbapi_connection.cancel_safe(timeout=5)


@contextlib.contextmanager
def interrupt_on(cancel: CancelFlag, connections: list[Connection]) -> Iterator[None]:
    """While inside, a set ``cancel`` cancels the statement of every connection in the list.

    The list may grow meanwhile (writers that connect later); it is read when the flag is set.
    Leaving does not wait for the watcher's next look at the flag (up to 0.1 s, paid by every
    one of thousands of small group jobs): it only makes sure, under ``leaving``, that no
    cancel is sent from then on, when the connections may already serve someone else.
    """
    done = threading.Event()
    leaving = threading.Lock()

    def watch() -> None:
        while not done.is_set():
            if cancel.wait(0.1):
                with leaving:
                    if not done.is_set():
                        for conn in list(connections):
                            cancel_statement(conn)
                return

    watcher = threading.Thread(target=watch, name="qsnap-cancel-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        with leaving:
            done.set()


def backend_pid(conn: Connection) -> int | None:
    """The server process behind a connection, or None when it has none any more."""
    if conn.closed or conn.invalidated:
        return None
    try:
        return conn.connection.dbapi_connection.info.backend_pid
    except Exception:
        return None


def lock_waits(conn: Connection, pids: list[int], seconds: float) -> list[tuple[int, int, str]]:
    """(waiting pid, blocking pid, the blocker's statement) for those of ``pids`` that have
    waited on a lock for more than ``seconds``."""
    rows = conn.execute(
        text(
            "select w.pid, b.pid, coalesce(left(b.query, 120), '') "
            "from pg_stat_activity w "
            "cross join lateral unnest(pg_blocking_pids(w.pid)) as bp(pid) "
            "join pg_stat_activity b on b.pid = bp.pid "
            "where w.pid = any(:pids) and w.wait_event_type = 'Lock' "
            "and w.state_change < clock_timestamp() - make_interval(secs => :s) "
            "order by w.pid, b.pid"
        ),
        {"pids": pids, "s": seconds},
    ).all()
    return [(int(w), int(b), " ".join(q.split())) for w, b, q in rows]
