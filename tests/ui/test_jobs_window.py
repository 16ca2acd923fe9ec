"""Refresh Population, cancel, real failures and responsiveness, driven through the window."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import psycopg
from PySide6.QtCore import QTimer
from uihelp import (
    band,
    bands_by_size,
    job_cell,
    libpq,
    null_out,
    retry_from_jobs_menu,
    select_band,
    select_target,
    target_cell,
)

from qsnap_gui.engine.population import apply_membership
from qsnap_gui.engine.snapshots import GROUP_SESSION, JobState
from qsnap_gui.ui.dialogs.refresh_preview import RefreshPreviewDialog
from qsnap_gui.ui.jobs import JobKind
from qsnap_gui.ui.models import JOB_ROLE, BandsModel, JobsModel, TargetsModel

WAIT_MS = 90_000


def record_band_progress(window) -> dict[int, list[tuple[JobState, int, int]]]:
    """What each band row showed in its Job cell, change by change."""
    seen: dict[int, list[tuple[JobState, int, int]]] = defaultdict(list)
    model = window.bands_model

    def changed(top_left, bottom_right, roles=()):
        if not top_left.column() <= BandsModel.JOB <= bottom_right.column():
            return
        for row in range(top_left.row(), bottom_right.row() + 1):
            info = model.index(row, BandsModel.JOB).data(JOB_ROLE)
            if info is not None:
                seen[info.band_id].append((info.state, info.rows_done, info.rows_total))

    model.dataChanged.connect(changed)
    return seen


def no_active_jobs(window) -> bool:
    return not window.controller.active()


def test_refresh_population_from_its_action(database, sql, make_window, qtbot):
    target_id = 1
    band_ids = sorted(bands_by_size(sql, target_id))
    null_out(sql, band_ids)
    window = make_window(database, batch_size=100)
    window.preferences.confirm_refresh = True
    select_target(window, qtbot, target_id)
    title = window.current_target().title
    seen = record_band_progress(window)
    before = target_cell(window, target_id, TargetsModel.LAST)  # the flip stamps it

    assert window.act_refresh.isEnabled()
    window.act_refresh.trigger()
    confirm = window.findChild(RefreshPreviewDialog)
    assert confirm.question.text() == (
        f"This will recalculate populations for all bands of {title}. Continue?"
    )
    confirm.refresh_button.click()
    qtbot.waitUntil(lambda: no_active_jobs(window), timeout=WAIT_MS)
    qtbot.waitUntil(
        lambda: (
            target_cell(window, target_id, TargetsModel.LAST) > before
            and all(b.missing == 0 and b.shapes_known for b in window.bands_model.bands())
        ),
        timeout=WAIT_MS,
    )
    assert target_cell(window, target_id, TargetsModel.STATUS) == "populated"

    jobs = window.controller.jobs()
    refresh = [j for j in jobs if j.kind is JobKind.REFRESH]
    band_jobs = {j.band_id: j for j in jobs if j.kind is JobKind.SNAPSHOT}
    assert [j.state for j in refresh] == [JobState.SUCCEEDED]
    assert sorted(band_jobs) == band_ids
    for band_id in band_ids:
        row = band(window, band_id)
        job = band_jobs[band_id]
        assert job.state is JobState.SUCCEEDED
        assert job.rows_total == row.population > 0
        progress = seen[band_id]
        assert progress[0][1] == 0, progress
        assert progress[-1] == (JobState.SUCCEEDED, row.population, row.population)
        done = [p[1] for p in progress]
        assert done == sorted(done), "progress never goes back within one attempt"
        assert row.shapes["envelope"] == row.population
    population = sum(b.population for b in window.bands_model.bands())
    assert target_cell(window, target_id, TargetsModel.POPULATION) == f"{population:,}"
    # the coverage comes from a second read, a moment after the list ("counting…" until then)
    qtbot.waitUntil(
        lambda: target_cell(window, target_id, TargetsModel.COVERAGE) == "100.0 %",
        timeout=WAIT_MS,
    )
    status = sql.execute("select population_status from targets where id = 1").fetchone()[0]
    assert status == "populated"


def test_cancel_in_the_middle_of_a_band(database, sql, make_window, qtbot, fresh_url):
    band_id, batch = bands_by_size(sql, 1)[0], 50
    null_out(sql, [band_id])
    total = sql.execute(
        "select count(*) from target_populations where target_band_id = %s", (band_id,)
    ).fetchone()[0]
    window = make_window(database, batch_size=batch)
    select_target(window, qtbot, 1)
    select_band(window, band_id)

    # Hold the rows past the second batch: the job commits two batches, then blocks.
    with psycopg.connect(libpq(fresh_url)) as lock:
        lock.execute(
            "select id from target_populations where target_band_id = %(b)s and id > "
            "(select id from target_populations where target_band_id = %(b)s "
            " order by id offset %(n)s limit 1) for update",
            {"b": band_id, "n": 2 * batch - 1},
        )
        window.act_snap_missing.trigger()
        job_id = window.controller.jobs()[-1].id
        qtbot.waitUntil(
            lambda: (
                sql.execute(
                    "select count(*) from pg_stat_activity "
                    "where application_name = %s and wait_event_type = 'Lock'",
                    (f"qsnap band {band_id}",),
                ).fetchone()[0]
                == 1
            ),
            timeout=WAIT_MS,
        )
        qtbot.waitUntil(lambda: window.controller.job(job_id).batch == 2, timeout=WAIT_MS)
        batches = -(-total // batch)
        qtbot.waitUntil(  # the band's row shows where the job stands
            lambda: job_cell(window, band_id).startswith(
                f"{2 * batch} / {total:,} · batch 2 of {batches}"
            ),
            timeout=WAIT_MS,
        )
        qtbot.waitUntil(  # the wait is named, with who holds the lock
            lambda: job_cell(window, band_id).startswith("waiting for a lock held by pid "),
            timeout=WAIT_MS,
        )
        assert window.act_cancel.isEnabled()
        window.act_cancel.trigger()
        # Cancel interrupts the batch waiting on the lock: the job ends while it is still held
        qtbot.waitUntil(lambda: not window.controller.job(job_id).active, timeout=WAIT_MS)
        lock.rollback()

    job = window.controller.job(job_id)
    assert job.state is JobState.CANCELLED
    assert job.rows_written == 2 * batch  # the two committed batches stay, nothing else
    left = total - 2 * batch
    assert (
        sql.execute(
            "select count(*) from target_populations "
            "where target_band_id = %s and matching_tags_snapshot is null",
            (band_id,),
        ).fetchone()[0]
        == left
    )
    qtbot.waitUntil(lambda: band(window, band_id).missing == left, timeout=WAIT_MS)
    assert job_cell(window, band_id).startswith(f"cancelled · {2 * batch} rows kept")

    retry_from_jobs_menu(window, job_id)
    rerun = window.controller.jobs()[-1].id
    assert rerun != job_id
    qtbot.waitUntil(lambda: not window.controller.job(rerun).active, timeout=WAIT_MS)
    assert window.controller.job(rerun).state is JobState.SUCCEEDED
    assert window.controller.job(rerun).rows_total == left
    qtbot.waitUntil(lambda: band(window, band_id).missing == 0, timeout=WAIT_MS)


class Killer(threading.Thread):
    """Terminates the band job's connection (or its group's) each time it waits on the held
    rows."""

    def __init__(self, url: str, band_id: int) -> None:
        super().__init__(daemon=True)
        self.url, self.names = url, [f"qsnap band {band_id}", GROUP_SESSION]
        self.stop = threading.Event()
        self.kills = 0

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                killed = conn.execute(
                    "select count(*) filter (where pg_terminate_backend(pid)) "
                    "from pg_stat_activity "
                    "where application_name = any(%s) and wait_event_type = 'Lock'",
                    (self.names,),
                ).fetchone()[0]
                self.kills += killed
                self.stop.wait(0.01)


def test_a_band_job_failing_for_real(database, sql, make_window, qtbot, fresh_url):
    target_id = 2
    failing = sql.execute(
        "select id from target_bands where target_id = %s and is_bullseye = '1'", (target_id,)
    ).fetchone()[0]
    # Make the refresh's diff a no-op, so it never touches the rows held below.
    with database.engine.begin() as conn:
        apply_membership(conn, target_id)
    null_out(sql, [failing])
    window = make_window(database, batch_size=100)
    select_target(window, qtbot, target_id)

    killer = Killer(libpq(fresh_url), failing)
    with psycopg.connect(libpq(fresh_url)) as lock:
        lock.execute(
            "select id from target_populations where target_band_id = %s for update", (failing,)
        )
        killer.start()
        try:
            window.act_refresh.trigger()
            qtbot.waitUntil(lambda: no_active_jobs(window), timeout=WAIT_MS)
        finally:
            killer.stop.set()
            killer.join()
        lock.rollback()

    jobs = window.controller.jobs()
    refresh = next(j for j in jobs if j.kind is JobKind.REFRESH)
    bad = next(j for j in jobs if j.band_id == failing)
    assert killer.kills >= 3
    assert bad.state is JobState.FAILED
    assert (bad.attempt, bad.max_attempts) == (3, 3)
    assert "lost the database connection" in bad.error
    assert all(j.state is JobState.SUCCEEDED for j in jobs if j.band_id not in (None, failing))
    assert refresh.state is JobState.FAILED
    band_jobs = [j for j in jobs if j.kind is JobKind.SNAPSHOT]
    assert f"1 of {len(band_jobs)} band jobs failed (target populated)" in refresh.error

    row = next(
        r for r in range(window.jobs_model.rowCount()) if window.jobs_model.info(r).id == bad.id
    )
    cells = [window.jobs_model.index(row, c).data() for c in range(len(JobsModel.COLUMNS))]
    assert cells[JobsModel.STATE] == "failed"
    assert cells[JobsModel.ATTEMPT] == "3 of 3"
    assert "lost the database connection" in cells[JobsModel.ERROR]
    assert window.banner.isVisible() and "failed" in window.banner.message.text()

    qtbot.waitUntil(
        lambda: target_cell(window, target_id, TargetsModel.STATUS) == "populated",
        timeout=WAIT_MS,
    )
    status = sql.execute("select population_status from targets where id = %s", (target_id,))
    assert status.fetchone()[0] == "populated"
    assert band(window, failing).missing == band(window, failing).population


def test_the_event_loop_is_never_starved(database, sql, make_window, qtbot):
    target_id = 4
    largest = bands_by_size(sql, target_id)[:3]
    assert len(largest) == 3, "the demo's target 4 has at least three bands"
    window = make_window(database, batch_size=2, threads=3)  # many batches: a busy GUI thread
    select_target(window, qtbot, target_id)
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    most_running = [0]

    def count_running(_job_id: int) -> None:
        running = [j for j in window.controller.active() if j.state is JobState.RUNNING]
        most_running[0] = max(most_running[0], len(running))

    window.controller.jobChanged.connect(count_running)
    timer.start()
    for band_id in largest:
        select_band(window, band_id)
        window.act_snap_force.trigger()
    started = len(ticks)
    qtbot.waitUntil(lambda: no_active_jobs(window), timeout=WAIT_MS)
    timer.stop()

    gaps = [b - a for a, b in zip(ticks[started:], ticks[started + 1 :], strict=False)]
    jobs = window.controller.jobs()
    assert len(jobs) == 3 and all(j.state is JobState.SUCCEEDED for j in jobs)
    assert most_running[0] == 3, "the three band jobs ran at the same time"
    assert len(gaps) > 10
    print(
        f"\nlargest QTimer gap while 3 band jobs ran: {max(gaps) * 1000:.1f} ms "
        f"({len(gaps)} ticks, {sum(j.rows_written for j in jobs):,} rows written)"
    )
    assert max(gaps) < 0.25
