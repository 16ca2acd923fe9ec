"""The PostgreSQL server stops while the window is open and band jobs run, then comes back.

A PostgreSQL server of this module alone (never the shared test server) holds a demo database;
two band jobs are held mid-band by row locks, the server is stopped with ``pg_ctl -m fast``,
and the window must stay responsive, show the lost connection, and finish the bands on Retry
once the server is back.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
import warnings

import psycopg
import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
from sqlalchemy import text
from uihelp import band, bands_by_size, libpq, null_out, retry_from_jobs_menu, select_band
from uihelp import select_target as select_target_row

from qsnap_gui.engine.snapshots import JobState
from qsnap_gui.store.db import open_database
from qsnap_gui.tools.demo import DemoSpec, generate_demo
from qsnap_gui.ui.models import JobsModel
from tests.worlds import reference_snapshots, stored_snapshots

WAIT_MS = 90_000
BATCH = 50
BLOCKED_AT = 120  # the job commits two batches, then waits on this row
LOST = ("lost the database connection", "cannot connect to the database")


@pytest.fixture(scope="module")
def own_server():
    """A PostgreSQL server of this module alone: stopping it disturbs no other test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        server = pgserver.get_server(
            tempfile.mkdtemp(prefix="qsnap-ui-stop-"), cleanup_mode="delete"
        )
    with psycopg.connect(server.get_uri("postgres"), autocommit=True) as conn:
        conn.execute("create database lost")
    url = server.get_uri("lost").replace("postgresql://", "postgresql+psycopg://", 1)
    seed = open_database(url, check_schema=False)
    generate_demo(seed.engine, DemoSpec(me_files=2000, seed=5))
    seed.dispose()
    yield server, url
    _start(server)  # a failed test may have left it stopped
    server.cleanup()


def _stop(server) -> None:
    from pgserver._commands import pg_ctl

    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user, timeout=60)


def _start(server) -> None:
    """As embedded.start_server restarts it: forget the old postmaster, start a new one."""
    server._postmaster_info = None
    server.ensure_postgres_running()


@pytest.fixture
def lost_db(own_server):
    _server, url = own_server
    db = open_database(url)
    yield db
    db.dispose()


def waiting_on_lock(sql, band_ids: list[int]) -> int:
    return sql.execute(
        "select count(*) from pg_stat_activity "
        "where application_name = any(%s) and wait_event_type = 'Lock'",
        ([f"qsnap band {b}" for b in band_ids],),
    ).fetchone()[0]


def jobs_row(window, job_id: int) -> list[str]:
    model = window.jobs_model
    row = next(r for r in range(model.rowCount()) if model.info(r).id == job_id)
    return [model.index(row, c).data() for c in range(len(JobsModel.COLUMNS))]


def test_server_stops_under_running_jobs_then_retry_completes(
    own_server, lost_db, make_window, qtbot
):
    server, url = own_server
    with psycopg.connect(libpq(url), autocommit=True) as sql:
        target_id = sql.execute(
            "select b.target_id from target_populations p "
            "join target_bands b on b.id = p.target_band_id "
            "group by b.target_id order by count(*) desc limit 1"
        ).fetchone()[0]
        band_ids = bands_by_size(sql, target_id)[:2]
        null_out(sql, band_ids)
        sizes = {
            b: sql.execute(
                "select count(*) from target_populations where target_band_id = %s", (b,)
            ).fetchone()[0]
            for b in band_ids
        }
    assert all(size > 4 * BATCH for size in sizes.values()), sizes

    window = make_window(lost_db, batch_size=BATCH, retry_backoff=0.05)
    assert window.controller.backoff == 0.05
    select_target_row(window, qtbot, target_id)

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))

    blocker = psycopg.connect(libpq(url))  # holds one row of each band: the jobs wait mid-band
    try:
        for band_id in band_ids:
            blocker.execute(
                "select 1 from target_populations where id = (select id from target_populations "
                "where target_band_id = %s order by id offset %s limit 1) for update",
                (band_id, BLOCKED_AT),
            )
        job_ids = []
        for band_id in band_ids:
            select_band(window, band_id)
            window.act_snap_missing.trigger()
            job_ids.append(window.controller.jobs()[-1].id)
        with psycopg.connect(libpq(url), autocommit=True) as sql:
            qtbot.waitUntil(lambda: waiting_on_lock(sql, band_ids) == 2, timeout=WAIT_MS)
        for job_id in job_ids:
            qtbot.waitUntil(lambda j=job_id: window.controller.job(j).batch == 2, timeout=WAIT_MS)
            assert window.controller.job(job_id).state is JobState.RUNNING

        # Stop the server from another thread: pg_ctl must not block the GUI thread either.
        timer.start()
        stopper = threading.Thread(target=_stop, args=(server,))
        stopper.start()
        qtbot.waitUntil(lambda: not stopper.is_alive(), timeout=WAIT_MS)
        qtbot.waitUntil(
            lambda: not any(window.controller.job(j).active for j in job_ids), timeout=WAIT_MS
        )
        # The next reload meets the stopped server: a banner with Retry, nothing modal.
        window.act_reload.trigger()
        qtbot.waitUntil(
            lambda: (
                window.banner.isVisible()
                and window.banner.message.text().startswith("Cannot read from ")
            ),
            timeout=WAIT_MS,
        )
        timer.stop()
    finally:
        with contextlib.suppress(psycopg.Error):
            blocker.close()  # its server session is gone already

    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    assert len(gaps) > 10
    print(
        f"\nlargest QTimer gap while the server stopped and {len(job_ids)} jobs failed: "
        f"{max(gaps) * 1000:.1f} ms ({len(gaps)} ticks)"
    )
    assert max(gaps) < 0.5

    for job_id in job_ids:
        job = window.controller.job(job_id)
        assert job.state in (JobState.FAILED, JobState.WAITING), job
        assert job.error and any(cause in job.error for cause in LOST), job.error
        # Whole batches only: two before the held row, or three when the fast shutdown ended
        # the blocker's session (freeing the row) a moment before the job's own.
        assert job.rows_written in (2 * BATCH, 3 * BATCH), job.rows_written
        cells = jobs_row(window, job_id)
        assert cells[JobsModel.STATE] in ("failed", "waiting")
        assert any(cause in cells[JobsModel.ERROR] for cause in LOST), cells
    banner = window.banner.message.text()
    print(f"job error: {window.controller.job(job_ids[0]).error}\nbanner: {banner}")
    assert "cannot connect" in banner.lower() and "Traceback" not in banner
    assert window.banner.action.isVisible() and window.banner.action.text() == "Retry"
    assert QApplication.activeModalWidget() is None
    assert "Traceback" not in window.log_view.toPlainText()

    # The server comes back: the banner's Retry reads again, the Jobs dock's Retry finishes.
    _start(server)
    with qtbot.waitSignal(window.loaded, timeout=WAIT_MS):
        window.banner.action.click()
    qtbot.waitUntil(lambda: not window.banner.isVisible(), timeout=WAIT_MS)
    kept = {
        b: window.controller.job(j).rows_written for j, b in zip(job_ids, band_ids, strict=True)
    }
    with lost_db.engine.connect() as conn:
        for band_id in band_ids:  # nothing half-written: exactly the committed rows, each right
            filled = {i: v for i, v in stored_snapshots(conn, band_id).items() if v is not None}
            assert len(filled) == kept[band_id]
            reference = reference_snapshots(conn, band_id)
            assert filled == {i: reference[i] for i in filled}
    reruns = []
    for job_id in job_ids:
        retry_from_jobs_menu(window, job_id)
        reruns.append(window.controller.jobs()[-1].id)
    assert set(reruns).isdisjoint(job_ids)
    qtbot.waitUntil(
        lambda: not any(window.controller.job(j).active for j in reruns), timeout=WAIT_MS
    )
    for rerun, band_id in zip(reruns, band_ids, strict=True):
        job = window.controller.job(rerun)
        assert job.state is JobState.SUCCEEDED, job
        assert job.rows_written == sizes[band_id] - kept[band_id]
        qtbot.waitUntil(lambda b=band_id: band(window, b).missing == 0, timeout=WAIT_MS)
    with lost_db.engine.connect() as conn:
        for band_id in band_ids:
            stored = stored_snapshots(conn, band_id)
            assert len(stored) == sizes[band_id]
            assert stored == reference_snapshots(conn, band_id), band_id
        assert conn.execute(text("select 1")).scalar_one() == 1
