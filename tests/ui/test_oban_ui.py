"""The window with Qlarius's Oban workers: Run on, the Oban jobs beside the local ones,
Retry/Cancel, the pending view, polling paused while hidden, the deprecated snapshot worker asked
about first. oban_jobs is built by Oban's own migrations and a stand-in node runs the jobs (both
from tests/test_oban.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox
from sqlalchemy import text
from uihelp import select_band, select_target

from qsnap_gui.domain import oban as od
from qsnap_gui.engine import oban
from qsnap_gui.store.queries import band_target
from qsnap_gui.ui.oban import monitor
from qsnap_gui.ui.oban.integration import WORKERS
from qsnap_gui.ui.oban.jobs_table import ObanJobsModel

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.test_oban import (  # noqa: E402
    StandInNode,
    a_band,
    install_oban,
    nulls,
    oban_reference_insert,
)

WAIT_MS = 60_000


@pytest.fixture
def fast_polls(monkeypatch):
    monkeypatch.setattr(monitor, "POLL_MS", 50)


@pytest.fixture
def oban_window(database, make_window, qtbot, fast_polls):
    install_oban(database)
    window = make_window(database)
    qtbot.waitUntil(lambda: window.oban.monitor.available, timeout=WAIT_MS)
    return window


def panel_job(window, job_id: int):
    model = window.oban.panel.model
    row = model.row_of(job_id)
    return model.job(row) if row is not None else None


def panel_cell(window, job_id: int, column: int) -> str:
    model = window.oban.panel.model
    return model.index(model.row_of(job_id), column).data()


def wait_state(window, qtbot, job_id: int, state: str, attempt: int | None = None) -> None:
    def seen() -> bool:
        job = panel_job(window, job_id)
        return (
            job is not None and job.state == state and (attempt is None or job.attempt == attempt)
        )

    qtbot.waitUntil(seen, timeout=WAIT_MS)


def select_panel_row(window, job_id: int) -> None:
    panel = window.oban.panel
    panel.view.selectRow(panel.model.row_of(job_id))
    assert panel.actions.selected().id == job_id


def band_target_of(sql, band_id: int) -> int:
    return sql.execute("select target_id from target_bands where id = %s", (band_id,)).fetchone()[0]


def log_text(window) -> str:
    return window.log_view.toPlainText()


def answer_deprecated_worker(window, qtbot, button) -> None:
    """The window's question before a snapshot job on the deprecated worker."""
    qtbot.waitUntil(
        lambda: window.oban.confirm_box is not None and window.oban.confirm_box.isVisible(),
        timeout=WAIT_MS,
    )
    box = window.oban.confirm_box
    assert "Qlarius marks SnapshotBandPopulationsWorker deprecated" in box.text()
    assert "no SnapshotBandPopulationsWorker job has completed in public.oban_jobs" in box.text()
    box.button(button).click()
    qtbot.waitUntil(lambda: window.oban.confirm_box is None, timeout=WAIT_MS)


def test_without_oban_jobs_the_choice_is_hidden(database, make_window, qtbot):
    window = make_window(database)
    qtbot.waitUntil(lambda: window.oban.monitor.database is database, timeout=WAIT_MS)
    assert not window.oban.run_on_action.isVisible()
    assert window.oban.panel.isHidden() and not window.oban.act_pending.isVisible()
    assert not window.oban.runs_jobs()
    assert window.oban.show_pending() is None
    assert window.oban.monitor.polls == 0


def test_band_job_on_qlarius_workers_shows_each_transition(oban_window, qtbot):
    window = oban_window
    assert window.oban.run_on_action.isVisible() and window.oban.panel.isVisible()
    db = window.database
    band_id = a_band(db)
    with db.engine.connect() as conn:
        target_id = band_target(conn, band_id)
    select_target(window, qtbot, target_id)
    select_band(window, band_id)
    assert window.act_snap_repair.isEnabled()
    window.oban.run_on.setCurrentIndex(WORKERS)
    assert window.oban.runs_jobs()
    assert not window.act_snap_repair.isEnabled() and not window.act_snap_force.isEnabled()
    assert "fill missing snapshots only" in window.act_snap_force.toolTip()

    window.act_snap_missing.trigger()
    answer_deprecated_worker(window, qtbot, QMessageBox.StandardButton.No)
    assert "not enqueued (the snapshot worker is deprecated)" in log_text(window)
    assert not window.oban.monitor.session_ids
    window.act_snap_missing.trigger()
    answer_deprecated_worker(window, qtbot, QMessageBox.StandardButton.Yes)
    qtbot.waitUntil(lambda: bool(window.oban.monitor.session_ids), timeout=WAIT_MS)
    (job_id,) = window.oban.monitor.session_ids
    assert "warning: Qlarius marks SnapshotBandPopulationsWorker deprecated" in log_text(window)
    wait_state(window, qtbot, job_id, "available")
    assert not window.controller.jobs()  # nothing ran on this computer
    qtbot.waitUntil(lambda: not window.act_snap_missing.isEnabled(), timeout=WAIT_MS)
    assert f"Oban job {job_id} is available on this band" in window.act_snap_missing.toolTip()

    node = StandInNode(db)
    (claimed,) = node.fetch()
    wait_state(window, qtbot, job_id, "executing", attempt=1)
    assert panel_cell(window, job_id, ObanJobsModel.NODE) == "qlarius@worker-1"
    assert panel_cell(window, job_id, ObanJobsModel.ATTEMPT) == "1 of 3"
    missing = nulls(db, band_id)
    assert panel_cell(window, job_id, ObanJobsModel.PROGRESS).endswith(f"{missing:,} left")
    node.error(claimed, "the node lost its database connection")
    wait_state(window, qtbot, job_id, "retryable")
    assert panel_cell(window, job_id, ObanJobsModel.ERROR) == (
        "attempt 1: ** (RuntimeError) the node lost its database connection"
    )
    node.stage()
    wait_state(window, qtbot, job_id, "available")
    (claimed,) = node.fetch()
    wait_state(window, qtbot, job_id, "executing", attempt=2)
    node.perform(claimed)
    wait_state(window, qtbot, job_id, "completed")

    head = f"job {job_id} (band {band_id})"
    log = log_text(window)
    for line in (
        f"band {band_id}: enqueued Oban job {job_id} on the Qlarius workers",
        f"{head}: available -> executing (attempt 1 of 3 on qlarius@worker-1)",
        f"{head}: attempt 1 failed: ** (RuntimeError) the node lost its database connection",
        f"{head}: executing -> retryable",
        f"{head}: retryable -> available",
        f"{head}: available -> executing (attempt 2 of 3 on qlarius@worker-1)",
        f"{head}: executing -> completed (after 2 of 3 attempts",
    ):
        assert line in log, line
    select_panel_row(window, job_id)
    details = window.oban.panel.details.toPlainText()
    assert f"Oban job {job_id}: {od.WORKER_BAND}" in details and "completed" in details
    assert "attempt 1 at " in details and "the node lost its database connection" in details
    # the band's counts are read again: nothing missing any more
    qtbot.waitUntil(
        lambda: next(b for b in window.bands_model.bands() if b.id == band_id).missing == 0,
        timeout=WAIT_MS,
    )
    assert panel_cell(window, job_id, ObanJobsModel.PROGRESS).endswith(" 0 left")


def discard(node: StandInNode, job_id: int, message: str = "boom") -> None:
    """Every attempt of the job fails (it must be the only available job)."""
    node.fail[job_id] = message
    for _ in range(3):
        node.stage()
        (claimed,) = node.fetch()
        assert claimed["id"] == job_id
        node.perform(claimed)


def bands_with_nulls(sql, count: int) -> list[int]:
    rows = sql.execute(
        "select target_band_id from target_populations where matching_tags_snapshot is null "
        "group by 1 order by count(*) desc limit %s",
        (count,),
    ).fetchall()
    assert len(rows) == count
    return [r[0] for r in rows]


def test_retry_and_cancel_from_the_jobs_dock(oban_window, qtbot, sql):
    window = oban_window
    db = window.database
    node = StandInNode(db)
    first, second, third = bands_with_nulls(sql, 3)
    broken = oban.enqueue_band(db.engine, first)  # not this session's: the pending view has it
    discard(node, broken.job_id)
    running = oban.enqueue_band(db.engine, second)
    (claimed,) = node.fetch()
    assert claimed["id"] == running.job_id
    waiting = oban.enqueue_band(db.engine, third)
    actions = window.oban.panel.actions

    wait_state(window, qtbot, waiting.job_id, "available")
    select_panel_row(window, waiting.job_id)
    assert actions.cancel.isEnabled() and not actions.retry.isEnabled()
    assert "Only discarded or cancelled" in actions.retry.toolTip()
    actions.cancel.trigger()
    wait_state(window, qtbot, waiting.job_id, "cancelled")
    assert f"job {waiting.job_id} cancelled" in log_text(window)
    select_panel_row(window, waiting.job_id)
    assert actions.retry.isEnabled() and not actions.cancel.isEnabled()
    actions.retry.trigger()
    wait_state(window, qtbot, waiting.job_id, "available")
    assert panel_job(window, waiting.job_id).cancelled_at is None

    sql.execute('listen "public.oban_signal"')
    wait_state(window, qtbot, running.job_id, "executing")
    select_panel_row(window, running.job_id)
    assert actions.cancel.isEnabled()
    assert actions.cancel.text() == "&Cancel Oban job (mark it cancelled, ask its node to kill it)"
    actions.cancel.trigger()
    wait_state(window, qtbot, running.job_id, "cancelled")  # as Oban.cancel_job leaves it
    assert (
        f"job {running.job_id} cancelled (it was executing on qlarius@worker-1: its node was "
        "asked to kill it)"
    ) in log_text(window)
    signals = [(n.channel, n.payload) for n in sql.notifies(timeout=5, stop_after=1)]
    assert signals == [("public.oban_signal", f'{{"action":"pkill","job_id":{running.job_id}}}')]

    # the discarded job: retried from the pending view, with one more attempt
    dialog = window.oban.show_pending()
    dialog.set_filter(state="discarded")
    qtbot.waitUntil(lambda: dialog.model.row_of(broken.job_id) is not None, timeout=WAIT_MS)
    dialog.view.selectRow(dialog.model.row_of(broken.job_id))
    assert dialog.retry_button.isEnabled() and not dialog.cancel_button.isEnabled()
    dialog.retry_button.click()
    qtbot.waitUntil(lambda: dialog.model.row_of(broken.job_id) is None, timeout=WAIT_MS)
    wait_state(window, qtbot, broken.job_id, "available")
    assert panel_job(window, broken.job_id).max_attempts == 4
    dialog.close()


def test_pending_view_filters_by_state_and_worker_with_counts(oban_window, qtbot):
    window = oban_window
    db = window.database
    bands = [a_band(db, t) for t in (1, 2, 3)]
    made = [oban.enqueue_band(db.engine, b).job_id for b in bands]
    populate = oban.enqueue_populate(db.engine, 4).job_id
    oban.cancel_job(db.engine, made[0])
    assert window.oban.act_pending.isVisible()
    window.oban.act_pending.trigger()
    dialog = window.oban.pending_dialog
    assert dialog.isVisible()
    expected = (
        "4 jobs: available 3 · scheduled 0 · executing 0 · retryable 0 · completed 0 · "
        "discarded 0 · cancelled 1"
    )
    qtbot.waitUntil(lambda: dialog.counts.text() == expected, timeout=WAIT_MS)
    assert {j.id for j in dialog.model.jobs()} == {*made, populate}
    assert dialog.state_box.itemText(1) == "available (3)"

    dialog.set_filter(state="available")
    qtbot.waitUntil(
        lambda: {j.id for j in dialog.model.jobs()} == {made[1], made[2], populate},
        timeout=WAIT_MS,
    )
    dialog.set_filter(state="available", worker=od.WORKER_POPULATE)
    qtbot.waitUntil(lambda: [j.id for j in dialog.model.jobs()] == [populate], timeout=WAIT_MS)
    qtbot.waitUntil(lambda: dialog.counts.text().startswith("1 jobs: available 1"), timeout=WAIT_MS)
    dialog.set_filter(state="cancelled", worker=od.WORKER_BAND)
    qtbot.waitUntil(lambda: [j.id for j in dialog.model.jobs()] == [made[0]], timeout=WAIT_MS)
    row = dialog.model.row_of(made[0])
    assert dialog.model.index(row, ObanJobsModel.STATE).data() == "cancelled"
    dialog.close()
    assert window.oban.monitor.pending_filter is None


def test_polling_pauses_while_the_window_is_hidden(oban_window, qtbot):
    window = oban_window
    monitor = window.oban.monitor
    qtbot.waitUntil(lambda: monitor.polls >= 2, timeout=WAIT_MS)
    window.hide()
    assert monitor.paused
    qtbot.waitUntil(lambda: not monitor.runner.busy("oban-poll"), timeout=WAIT_MS)
    polls = monitor.polls
    for _ in range(5):  # five timer ticks, no poll
        with qtbot.waitSignal(monitor._timer.timeout, timeout=WAIT_MS):
            pass
        assert not monitor.runner.busy("oban-poll")
    assert monitor.polls == polls
    window.show()
    qtbot.waitUntil(lambda: monitor.polls > polls, timeout=WAIT_MS)
    window.showMinimized()
    qtbot.waitUntil(lambda: monitor.paused, timeout=WAIT_MS)
    window.showNormal()


def test_refresh_population_on_qlarius_workers(oban_window, qtbot):
    window = oban_window
    db = window.database
    target_id = 2
    select_target(window, qtbot, target_id)
    window.oban.run_on.setCurrentIndex(WORKERS)
    assert window.act_refresh.isEnabled()
    window.act_refresh.trigger()
    qtbot.waitUntil(lambda: bool(window.oban.monitor.session_ids), timeout=WAIT_MS)
    (job_id,) = window.oban.monitor.session_ids
    wait_state(window, qtbot, job_id, "available")
    assert panel_cell(window, job_id, ObanJobsModel.SUBJECT) == f"target {target_id}"
    qtbot.waitUntil(lambda: not window.act_refresh.isEnabled(), timeout=WAIT_MS)
    assert f"Oban job {job_id} is available on this target" in window.act_refresh.toolTip()
    qtbot.waitUntil(
        lambda: window.current_target().population_status == "populating", timeout=WAIT_MS
    )
    # the live Oban job makes the target busy, not stuck: no Resume
    assert not window.current_target().stuck
    qtbot.waitUntil(lambda: not window.act_resume.isEnabled(), timeout=WAIT_MS)

    node = StandInNode(db, node="qlarius@worker-2")
    (populate,) = node.fetch()
    wait_state(window, qtbot, job_id, "executing")
    assert panel_cell(window, job_id, ObanJobsModel.NODE) == "qlarius@worker-2"
    node.perform(populate)  # membership and the snapshots inline, as the application does now
    wait_state(window, qtbot, job_id, "completed")
    qtbot.waitUntil(
        lambda: (
            window.current_target().population_status == "populated"
            and all(b.missing == 0 for b in window.bands_model.bands())
        ),
        timeout=WAIT_MS,
    )
    assert f"job {job_id} (target {target_id}): executing -> completed" in log_text(window)
    assert not [j for j in window.oban.panel.model.jobs() if j.worker == od.WORKER_BAND]

    # a second refresh while the application's job is live follows that job
    again = oban_reference_insert(db, od.WORKER_POPULATE, {"target_id": target_id})
    wait_state(window, qtbot, again, "available")
    window.oban.submit_refresh(window.current_target())
    qtbot.waitUntil(
        lambda: (
            f"target {target_id}: already queued as job {again} (available), not enqueued again"
            in log_text(window)
        ),
        timeout=WAIT_MS,
    )
    assert again in window.oban.monitor.session_ids


def test_backfill_on_qlarius_workers_from_the_window(oban_window, qtbot):
    """What the wizard's "Run on: Qlarius workers" asks: one BackfillMissingSnapshotsWorker job."""
    window = oban_window
    db = window.database
    window.oban.monitor.enqueue_backfill()
    qtbot.waitUntil(lambda: bool(window.oban.monitor.session_ids), timeout=WAIT_MS)
    (job_id,) = window.oban.monitor.session_ids
    wait_state(window, qtbot, job_id, "available")
    assert panel_cell(window, job_id, ObanJobsModel.WORKER) == "backfill"
    assert panel_cell(window, job_id, ObanJobsModel.SUBJECT) == "every target"
    assert "fills the NULL snapshots of every target" in log_text(window)
    node = StandInNode(db)
    (claimed,) = node.fetch("maintenance")
    wait_state(window, qtbot, job_id, "executing")
    node.perform(claimed)
    wait_state(window, qtbot, job_id, "completed")
    assert nulls(db) == 0


def test_pending_view_has_every_state_of_oban_14(database, make_window, qtbot, fast_polls):
    install_oban(database, version=14)
    made = oban.enqueue_band(database.engine, a_band(database)).job_id
    with database.engine.begin() as conn:
        conn.execute(text("update oban_jobs set state = 'suspended' where id = :id"), {"id": made})
    window = make_window(database)
    qtbot.waitUntil(lambda: window.oban.monitor.available, timeout=WAIT_MS)
    assert window.oban.monitor.info.states == od.ALL_STATES
    dialog = window.oban.show_pending()
    expected = (
        "1 jobs: available 0 · suspended 1 · scheduled 0 · executing 0 · retryable 0 · "
        "completed 0 · discarded 0 · cancelled 0"
    )
    qtbot.waitUntil(lambda: dialog.counts.text() == expected, timeout=WAIT_MS)
    dialog.set_filter(state="suspended")
    qtbot.waitUntil(lambda: [j.id for j in dialog.model.jobs()] == [made], timeout=WAIT_MS)
    dialog.view.selectRow(0)
    assert dialog.cancel_button.isEnabled() and not dialog.retry_button.isEnabled()
    dialog.cancel_button.click()
    dialog.set_filter(state="cancelled")
    qtbot.waitUntil(lambda: [j.id for j in dialog.model.jobs()] == [made], timeout=WAIT_MS)
    dialog.close()


def test_window_renders_the_oban_jobs(oban_window, qtbot, tmp_path, sql):
    """A picture of the dock with jobs in every state (QSNAP_SCREENSHOT_DIR keeps a copy)."""
    window = oban_window
    db = window.database
    node = StandInNode(db)
    bands = bands_with_nulls(sql, 5)
    jobs = [oban.enqueue_band(db.engine, bands[0])]
    discard(node, jobs[0].job_id, "(Postgrex.Error) canceling statement due to statement timeout")
    jobs += [oban.enqueue_band(db.engine, b) for b in bands[1:]]
    (claimed,) = node.fetch()
    node.error(claimed, "(DBConnection.ConnectionError) connection closed", backoff=60)
    (claimed,) = node.fetch()
    node.perform(claimed)  # completed
    node.fetch()  # executing; the last one stays available
    window.oban.monitor.session_ids.update(j.job_id for j in jobs)
    oban.enqueue_populate(db.engine, 4)
    window.resize(1440, 900)
    select_target(window, qtbot, band_target_of(sql, bands[3]))
    window.oban.run_on.setCurrentIndex(WORKERS)
    qtbot.waitUntil(
        lambda: (
            panel_job(window, jobs[0].job_id) is not None
            and panel_job(window, jobs[0].job_id).state == "discarded"
            and panel_job(window, jobs[3].job_id).state == "executing"
        ),
        timeout=WAIT_MS,
    )
    select_panel_row(window, jobs[0].job_id)
    window.resizeDocks([window.targets_dock, window.jobs_dock], [200, 340], Qt.Orientation.Vertical)
    qtbot.waitUntil(lambda: window.jobs_dock.height() >= 300, timeout=WAIT_MS)
    path = tmp_path / "oban-jobs.png"
    assert window.grab().save(str(path), "PNG") and path.stat().st_size > 20_000
    keep = os.environ.get("QSNAP_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        window.grab().save(str(Path(keep) / "oban-jobs.png"), "PNG")
