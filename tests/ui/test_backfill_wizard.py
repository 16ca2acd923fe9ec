"""The backfill wizard driven page by page on a demo copy: scope, scan (and Cancel while a lock
holds it), run on a real JobController (Cancel all while a row lock holds a job, closing
while it runs), summary, Retry failed after real connection kills, the CSV report."""

from __future__ import annotations

import csv
import threading
from pathlib import Path

import psycopg
import pytest
from PySide6.QtCore import QStandardPaths, Qt
from PySide6.QtWidgets import QFileDialog, QMessageBox, QWizard
from uihelp import libpq

from qsnap_gui.engine.backfill import Category
from qsnap_gui.engine.snapshots import JobState, Mode
from qsnap_gui.store.db import open_database
from qsnap_gui.ui.backfill import BackfillWizard, Page
from qsnap_gui.ui.jobs import JobController

WAIT_MS = 60_000


@pytest.fixture
def controller(database):
    jobs = JobController(database, max_threads=4)
    jobs.backoff = 0.01
    # these tests hold one band's rows and expect the others to go on: bands of their own jobs
    jobs.group_rows = 0
    yield jobs
    assert jobs.shutdown(30_000)


@pytest.fixture
def make_wizard(qtbot, database, controller):
    wizards: list[BackfillWizard] = []

    def make(db=None) -> BackfillWizard:
        wizard = BackfillWizard(db or database, controller)
        wizard.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, False)
        qtbot.addWidget(wizard)
        wizard.show()
        qtbot.waitUntil(lambda: wizard.scope_page.target_list.count() > 0, timeout=WAIT_MS)
        wizards.append(wizard)
        return wizard

    yield make
    for wizard in wizards:
        wizard.run_page.cancel_all()
        wizard.scan_page.cancel_scan()
        wizard.scan_page.wait()


def answer(monkeypatch, reply) -> list[str]:
    asked: list[str] = []

    def question(parent, title, text, *args):
        asked.append(text)
        return reply

    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    return asked


def missing_per_band(sql) -> dict[int, int]:
    return dict(
        sql.execute(
            "select b.id, count(tp.id) filter (where tp.matching_tags_snapshot is null) "
            "from target_bands b left join target_populations tp on tp.target_band_id = b.id "
            "group by b.id"
        ).fetchall()
    )


def bands_of(sql, target_id: int) -> list[int]:
    return [
        r[0]
        for r in sql.execute(
            "select id from target_bands where target_id = %s order by id", (target_id,)
        )
    ]


def biggest_missing_band(sql, target_id: int) -> int:
    return sql.execute(
        "select tp.target_band_id from target_populations tp join target_bands b "
        "on b.id = tp.target_band_id where b.target_id = %s "
        "and tp.matching_tags_snapshot is null group by 1 order by count(*) desc, 1 limit 1",
        (target_id,),
    ).fetchone()[0]


class RowLock:
    """Holds ``select … for update`` on a band's first NULL rows in an open transaction."""

    def __init__(self, url: str, band_id: int, rows: int = 2) -> None:
        self.conn = psycopg.connect(libpq(url))
        self.conn.execute(
            "select id from target_populations where target_band_id = %s "
            "and matching_tags_snapshot is null order by id limit %s for update",
            (band_id, rows),
        )

    def release(self) -> None:
        if not self.conn.closed:
            self.conn.rollback()
            self.conn.close()


class Killer:
    """Terminates the band job's connections (application_name 'qsnap band <id>') until
    stopped."""

    def __init__(self, url: str, band_id: int) -> None:
        self.url, self.band_id = libpq(url), band_id
        self.stop = threading.Event()
        self.killed = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                self.killed += conn.execute(
                    "select count(pg_terminate_backend(pid)) from pg_stat_activity "
                    "where application_name = %s",
                    (f"qsnap band {self.band_id}",),
                ).fetchone()[0]
                self.stop.wait(0.02)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(10)


def waiting_on_lock(sql, application_name: str | None = None) -> bool:
    query = (
        "select count(*) from pg_stat_activity where wait_event_type = 'Lock' "
        "and pid <> pg_backend_pid()"
    )
    if application_name:
        return bool(
            sql.execute(query + " and application_name = %s", (application_name,)).fetchone()[0]
        )
    return bool(sql.execute(query).fetchone()[0])


def go_to_scan(qtbot, wizard, targets, categories) -> None:
    scope = wizard.scope_page
    scope.set_targets(targets)
    scope.set_categories(categories)
    assert scope.isComplete()
    wizard.next()
    assert wizard.currentId() == Page.SCAN


def scanned(qtbot, wizard) -> None:
    qtbot.waitUntil(lambda: wizard.scan_page.result is not None, timeout=WAIT_MS)


def run_to_summary(qtbot, wizard) -> None:
    assert wizard.currentId() == Page.RUN
    qtbot.waitUntil(wizard.run_page.isComplete, timeout=WAIT_MS)
    wizard.next()
    assert wizard.currentId() == Page.SUMMARY


def proxy_column(page, column: int, role=Qt.ItemDataRole.DisplayRole) -> list:
    proxy = page.proxy
    return [proxy.index(r, column).data(role) for r in range(proxy.rowCount())]


# --- tests -----------------------------------------------------------------------------------


def test_scope_page_choices(make_wizard):
    wizard = make_wizard()
    scope = wizard.scope_page
    assert wizard.currentId() == Page.SCOPE
    assert scope.chosen_categories() == {Category.MISSING}
    assert scope.chosen_target_ids() is None and scope.isComplete()
    assert not scope.target_list.isEnabled()

    scope.some_targets.setChecked(True)
    assert scope.target_list.isEnabled() and not scope.isComplete()
    assert not wizard.button(QWizard.WizardButton.NextButton).isEnabled()
    scope.target_list.item(1).setCheckState(Qt.CheckState.Checked)
    assert scope.chosen_target_ids() == [2] and scope.isComplete()

    scope.boxes[Category.STALE].setChecked(True)
    assert scope.chosen_categories() == set(Category)
    assert not scope.boxes[Category.MISSING].isEnabled()
    assert not scope.boxes[Category.BROKEN].isEnabled()
    assert "force mode" in scope.implied.text()
    scope.boxes[Category.STALE].setChecked(False)
    assert scope.boxes[Category.BROKEN].isEnabled()
    scope.boxes[Category.BROKEN].setChecked(False)
    scope.boxes[Category.MISSING].setChecked(False)
    assert not scope.chosen_categories() and not scope.isComplete()


def test_page_by_page_fixes_the_checked_bands(
    make_wizard, qtbot, database, fresh_url, sql, tmp_path, monkeypatch
):
    before = missing_per_band(sql)
    wizard = make_wizard()
    go_to_scan(qtbot, wizard, [1, 2], ["missing", "broken"])
    scanned(qtbot, wizard)
    page = wizard.scan_page
    ids = bands_of(sql, 1) + bands_of(sql, 2)
    band_ids = proxy_column(page, 0, Qt.ItemDataRole.UserRole + 1)
    assert sorted(band_ids) == ids
    rows = {r.band_id: r for r in page.result.rows}
    assert {b: rows[b].missing for b in ids} == {b: before[b] for b in ids}
    plans = {p.band_id for p in page.chosen_plans()}
    assert plans == {b for b in ids if rows[b].missing or rows[b].broken}
    checks = proxy_column(page, 0, Qt.ItemDataRole.CheckStateRole)
    assert all(c == Qt.CheckState.Checked for c in checks if c is not None)
    assert "Estimated duration: about" in page.estimate.text()
    assert page.isComplete()

    page.view.sortByColumn(3, Qt.SortOrder.DescendingOrder)  # Missing, as numbers
    shown = [rows[b].missing for b in proxy_column(page, 0, Qt.ItemDataRole.UserRole + 1)]
    assert shown == sorted(shown, reverse=True)

    left_alone = max(plans, key=lambda b: before[b])
    page.set_checked(left_alone, False)
    assert left_alone not in {p.band_id for p in page.chosen_plans()}
    assert f"{len(plans) - 1} of {len(plans)} bands" in page.totals.text()

    wizard.next()  # the commit button: Run backfill
    run_to_summary(qtbot, wizard)
    assert not wizard.button(QWizard.WizardButton.BackButton).isEnabled()

    summary = wizard.summary_page
    outcomes = summary.outcomes()
    assert {o.band_id for o in outcomes} == plans - {left_alone}
    assert all(o.state is JobState.SUCCEEDED for o in outcomes)
    for o in outcomes:
        assert o.fixed(Category.MISSING) == before[o.band_id]
        assert o.remaining(Category.MISSING) == o.remaining(Category.BROKEN) == 0
    assert summary.table.rowCount() == len(outcomes)
    assert f"{len(outcomes)} of {len(outcomes)} bands succeeded" in summary.headline.text()
    assert not summary.retry_button.isEnabled()
    after = missing_per_band(sql)
    assert after[left_alone] == before[left_alone] > 0
    assert all(after[o.band_id] == 0 for o in outcomes)

    path = tmp_path / "report.csv"
    summary.save_report(str(path))
    with path.open(encoding="utf-8", newline="") as fh:
        report = list(csv.DictReader(fh))
    assert [int(r["band_id"]) for r in report] == [o.band_id for o in outcomes]
    assert {r["state"] for r in report} == {"succeeded"}

    # Save report as CSV opens in the documents folder, then where the last report went
    offered: list[str] = []

    def save_as(parent, caption, where, *args):
        offered.append(where)
        return str(tmp_path / "chosen" / Path(where).name), "CSV files (*.csv)"

    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(save_as))
    (tmp_path / "chosen").mkdir()
    documents = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.DocumentsLocation)
    qtbot.mouseClick(summary.save_button, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(summary.save_button, Qt.MouseButton.LeftButton)
    assert offered == [
        str(Path(documents) / "backfill-report.csv"),
        str(tmp_path / "chosen" / "backfill-report.csv"),
    ]
    assert (tmp_path / "chosen" / "backfill-report.csv").is_file()

    wizard.button(QWizard.WizardButton.FinishButton).click()
    assert not wizard.isVisible()


def test_cancel_during_the_scan(make_wizard, qtbot, fresh_url, sql):
    wizard = make_wizard()
    with psycopg.connect(libpq(fresh_url)) as locker:
        locker.execute("lock table target_populations in access exclusive mode")
        go_to_scan(qtbot, wizard, None, ["stale"])
        page = wizard.scan_page
        assert page.scanning and page.cancel_button.isVisible()
        qtbot.waitUntil(lambda: waiting_on_lock(sql), timeout=WAIT_MS)
        qtbot.mouseClick(page.cancel_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: not page.scanning, timeout=10_000)  # the lock is still held
        assert "cancelled" in page.status.text()
        assert page.result is None and page.proxy.rowCount() == 0
        assert not page.isComplete()
        assert not wizard.button(QWizard.WizardButton.CommitButton).isEnabled()
        assert page.rescan_button.isVisible()
        locker.rollback()
    qtbot.mouseClick(page.rescan_button, Qt.MouseButton.LeftButton)
    scanned(qtbot, wizard)
    assert all(r.stale == 0 for r in page.result.rows)
    assert page.isComplete()


def test_cancel_all_during_the_run(make_wizard, qtbot, controller, fresh_url, sql):
    controller.batch_size = 20
    target = 1
    band = biggest_missing_band(sql, target)
    before = missing_per_band(sql)
    assert before[band] > 60
    wizard = make_wizard()
    go_to_scan(qtbot, wizard, [target], ["missing"])
    scanned(qtbot, wizard)
    lock = RowLock(fresh_url, band)
    try:
        wizard.next()
        run = wizard.run_page
        qtbot.waitUntil(lambda: waiting_on_lock(sql, f"qsnap band {band}"), timeout=WAIT_MS)
        qtbot.waitUntil(lambda: run.live_jobs() == [run.band_job[band]], timeout=WAIT_MS)
        assert run.running and not run.isComplete()
        qtbot.mouseClick(run.cancel_button, Qt.MouseButton.LeftButton)
        assert "Cancelling" in run.overall_label.text()
        # the batch waiting on the lock is interrupted: the job ends while the lock is held
        qtbot.waitUntil(lambda: not run.running, timeout=WAIT_MS)
    finally:
        lock.release()
    run_to_summary(qtbot, wizard)
    outcome = wizard.outcomes[band]
    assert outcome.state is JobState.CANCELLED and outcome.failed
    assert outcome.fixed(Category.MISSING) == outcome.rows_written < 20
    assert missing_per_band(sql)[band] == before[band] - outcome.fixed(Category.MISSING)
    others = [o for b, o in wizard.outcomes.items() if b != band]
    assert others and all(o.state is JobState.SUCCEEDED for o in others)
    summary = wizard.summary_page
    assert summary.retry_button.isEnabled()
    assert "cancelled" in summary.note.text()


def test_retry_failed_after_a_real_failure(make_wizard, qtbot, controller, fresh_url, sql):
    target = 2
    band = biggest_missing_band(sql, target)
    before = missing_per_band(sql)
    wizard = make_wizard()
    go_to_scan(qtbot, wizard, [target], ["missing", "broken"])
    scanned(qtbot, wizard)
    lock = RowLock(fresh_url, band)
    killer = Killer(fresh_url, band)
    try:
        wizard.next()
        run_to_summary(qtbot, wizard)
    finally:
        killer.finish()
        lock.release()
    assert killer.killed >= controller.max_attempts
    failed = wizard.outcomes[band]
    assert failed.state is JobState.FAILED
    assert "lost the database connection" in failed.error
    assert failed.fixed(Category.MISSING) == 0 and failed.remaining(Category.MISSING) > 0
    summary = wizard.summary_page
    assert "1 failed or cancelled" in summary.headline.text()
    row = next(
        r
        for r in range(summary.table.rowCount())
        if f"(band {band})" in summary.table.item(r, 1).text()
    )
    assert summary.table.item(row, 3).text() == "failed"
    assert "lost the database connection" in summary.table.item(row, 9).text()
    assert summary.retry_button.isEnabled()

    qtbot.mouseClick(summary.retry_button, Qt.MouseButton.LeftButton)
    assert wizard.currentId() == Page.RUN
    run_to_summary(qtbot, wizard)
    retried = wizard.outcomes[band]
    assert retried.state is JobState.SUCCEEDED and retried.attempts == failed.attempts + 1
    assert retried.fixed(Category.MISSING) == before[band]
    assert all(not o.failed for o in wizard.outcomes.values())
    assert not summary.retry_button.isEnabled()
    assert all(missing_per_band(sql)[b] == 0 for b in bands_of(sql, target))


def test_closing_while_it_runs_asks_first(
    make_wizard, qtbot, controller, fresh_url, sql, monkeypatch
):
    controller.batch_size = 20  # several batches: the cancel lands before the last
    target = 1
    band = biggest_missing_band(sql, target)
    wizard = make_wizard()
    go_to_scan(qtbot, wizard, [target], ["missing"])
    scanned(qtbot, wizard)
    lock = RowLock(fresh_url, band)
    try:
        wizard.next()
        run = wizard.run_page
        qtbot.waitUntil(lambda: waiting_on_lock(sql, f"qsnap band {band}"), timeout=WAIT_MS)
        job_id = run.band_job[band]

        asked = answer(monkeypatch, QMessageBox.StandardButton.No)
        wizard.close()
        assert len(asked) == 1 and "still running" in asked[0]
        assert wizard.isVisible() and controller.job(job_id).active

        asked = answer(monkeypatch, QMessageBox.StandardButton.Yes)
        wizard.button(QWizard.WizardButton.CancelButton).click()
        assert len(asked) == 1
        assert not wizard.isVisible()
    finally:
        lock.release()
    qtbot.waitUntil(lambda: not controller.job(job_id).active, timeout=WAIT_MS)
    assert controller.job(job_id).state is JobState.CANCELLED


def test_closing_after_the_run_does_not_ask(make_wizard, qtbot, sql, monkeypatch):
    wizard = make_wizard()
    go_to_scan(qtbot, wizard, [4], ["missing"])
    scanned(qtbot, wizard)
    wizard.next()
    run_to_summary(qtbot, wizard)
    asked = answer(monkeypatch, QMessageBox.StandardButton.No)
    wizard.close()
    assert not asked and not wizard.isVisible()


def test_stale_bands_run_in_force_mode(make_wizard, qtbot, sql):
    band = biggest_missing_band(sql, 3)
    sql.execute(
        "update me_file_tags set tag_value = tag_value || ' (edited)' where me_file_id in "
        "(select me_file_id from target_populations where target_band_id = %s "
        "and matching_tags_snapshot is not null) ",
        (band,),
    )
    wizard = make_wizard()
    go_to_scan(qtbot, wizard, [3], ["stale"])
    scanned(qtbot, wizard)
    page = wizard.scan_page
    row = page.result.row(band)
    assert row.stale > 0
    modes = {p.band_id: p.mode for p in page.chosen_plans()}
    assert modes[band] is Mode.FORCE
    assert next(p for p in page.chosen_plans() if p.band_id == band).rows == row.population
    wizard.next()
    run_to_summary(qtbot, wizard)
    outcome = wizard.outcomes[band]
    assert outcome.fixed(Category.STALE) == row.stale
    assert outcome.remaining(Category.STALE) == 0
    assert outcome.rewritten_unchanged == outcome.rows_written - row.stale - row.missing - (
        row.broken
    )
    assert "Force mode also rewrote" in wizard.summary_page.note.text() or (
        outcome.rewritten_unchanged == 0
    )


def test_read_only_session_scans_but_does_not_run(make_wizard, qtbot, fresh_url):
    read_only = open_database(fresh_url, read_only=True)
    try:
        wizard = make_wizard(read_only)
        go_to_scan(qtbot, wizard, None, ["missing"])
        scanned(qtbot, wizard)
        page = wizard.scan_page
        assert page.result.totals()["missing"] > 0
        assert "read-only" in page.blocked.text()
        assert not page.isComplete()
        assert not wizard.button(QWizard.WizardButton.CommitButton).isEnabled()
        wizard.close()
    finally:
        read_only.dispose()
