"""Tools > Backfill snapshots…: find every population whose snapshot is missing, broken or stale,
and fix them band by band as jobs on the window's job controller (issue 6).

Four pages: Scope (targets, categories), Scan (``backfill.scan`` in a QRunnable, a sortable table
with a checkbox per band), Run (one job per band on the JobController, in parallel), Summary
(rows fixed per category, failures, Retry failed, Save report as CSV). The wizard builds no SQL:
the scan, the plan, the recount after each job and the report are the core's
(``qsnap_gui.engine.backfill``); worker threads only call the core and emit plain data.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from enum import IntEnum
from functools import partial
from html import escape

from PySide6.QtCore import (
    QAbstractTableModel,
    QCoreApplication,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QRunnable,
    QSortFilterProxyModel,
    Qt,
    QThreadPool,
    QTimer,
    Signal,
    Slot,
)
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QCheckBox,
    QFileDialog,
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QTableView,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
    QWizard,
    QWizardPage,
)

from qsnap_gui.engine import backfill
from qsnap_gui.engine.backfill import (
    CATEGORIES,
    BandOutcome,
    BandPlan,
    Category,
    ScanResult,
    ScanRow,
    TargetChoice,
)
from qsnap_gui.engine.snapshots import CancelFlag, JobState, Mode
from qsnap_gui.store.db import SNAPSHOT_PRIVILEGES, Database, missing_privileges
from qsnap_gui.ui import format as fmt
from qsnap_gui.ui.icons import icon
from qsnap_gui.ui.jobs import JobController, JobInfo
from qsnap_gui.ui.tasks import TaskRunner, error_text

SORT_ROLE = Qt.ItemDataRole.UserRole
BAND_ROLE = Qt.ItemDataRole.UserRole + 1
RIGHT = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
DIM = QColor("#94a3b8")
RED = QColor("#b91c1c")
GREEN = QColor("#15803d")
AMBER = QColor("#b45309")
Index = QModelIndex | QPersistentModelIndex

CATEGORY_TITLES = {
    Category.MISSING: "Missing",
    Category.BROKEN: "Broken",
    Category.STALE: "Stale",
}
SHAPE_TITLES = {
    "bare_array": "bare array",
    "legacy_flat": "legacy flat",
    "empty_object": "empty object",
    "null_values": "null values",
    "invalid": "invalid",
}
MODE_TIPS = {
    Mode.MISSING: "missing mode: fills NULL snapshots only",
    Mode.REPAIR: "repair mode: fills NULL snapshots and rebuilds broken ones",
    Mode.FORCE: "force mode: rewrites every row of the band (it has stale snapshots)",
}
STATE_TEXT = {
    JobState.QUEUED: "queued",
    JobState.WAITING: "waiting: the band is being snapshotted elsewhere",
    JobState.RUNNING: "running",
    JobState.RETRYING: "retrying",
    JobState.SUCCEEDED: "succeeded",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "cancelled",
}
PROGRESS_INTERVAL_S = 0.05


class Page(IntEnum):
    SCOPE = 0
    SCAN = 1
    RUN = 2
    SUMMARY = 3


def _note(text: str = "", name: str = "paneSubtitle") -> QLabel:
    label = QLabel(text)
    label.setObjectName(name)
    label.setWordWrap(True)
    return label


def _count_cell(value: int | None) -> str:
    return "—" if value is None else fmt.count(value)


# --- the scan, off the GUI thread -----------------------------------------------------------


class ScanSignals(QObject):
    """Created on the GUI thread, so its signals reach the page through queued connections."""

    progress = Signal(int, int, str)
    finished = Signal(object)  # backfill.ScanResult
    cancelled = Signal()
    failed = Signal(str)


class ScanTask(QRunnable):
    """Runs ``backfill.scan`` on its own connection; hands over plain data only.

    It runs on Qt's global pool with its signals owned by the application, so closing or
    deleting the wizard never waits for a scan: the wizard cancels it, and a late result
    reaches no receiver. ``ended`` is set once it has emitted its last signal.
    """

    def __init__(
        self,
        database: Database,
        target_ids: list[int] | None,
        include: frozenset[Category],
        cancel: CancelFlag,
        signals: ScanSignals,
    ) -> None:
        super().__init__()
        self.database = database
        self.target_ids = target_ids
        self.include = include
        self.cancel = cancel
        self.signals = signals
        self.ended = threading.Event()
        self._last = 0.0

    def run(self) -> None:
        try:
            self._scan()
        finally:
            self.ended.set()

    def _scan(self) -> None:
        try:
            with self.database.engine.connect() as conn:
                result = backfill.scan(
                    conn, self.target_ids, self.include, cancel=self.cancel, progress=self._progress
                )
        except backfill.ScanCancelled:
            self._emit(self.signals.cancelled)
            return
        except Exception as exc:
            if self.cancel.is_set():
                self._emit(self.signals.cancelled)
            else:
                self._emit(self.signals.failed, error_text(exc, self.database.url))
            return
        self._emit(self.signals.finished, result)

    def _progress(self, done: int, total: int, message: str) -> None:
        now = time.monotonic()
        if done < total and now - self._last < PROGRESS_INTERVAL_S:
            return
        self._last = now
        self._emit(self.signals.progress, done, total, message)

    @staticmethod
    def _emit(signal, *args) -> None:
        with contextlib.suppress(RuntimeError):  # the wizard is gone: nobody to tell
            signal.emit(*args)


def _count_after(database: Database, band_id: int, include: frozenset[Category]) -> ScanRow:
    """Runs on a reader thread: the band's counts once its job has ended."""
    with database.engine.connect() as conn:
        return backfill.band_counts(conn, band_id, include)


def _load_targets(database: Database) -> list[TargetChoice]:
    with database.engine.connect() as conn:
        return backfill.list_target_choices(conn)


# --- page 1: scope --------------------------------------------------------------------------


class ScopePage(QWizardPage):
    def __init__(self, wizard: BackfillWizard) -> None:
        super().__init__()
        self.wiz = wizard
        self.setTitle("What to backfill")
        self.setSubTitle(
            "Choose the targets and the kinds of snapshot to fix. Nothing is written before the "
            "Run step."
        )
        self.all_targets = QRadioButton("All targets")
        self.some_targets = QRadioButton("Chosen targets")
        self.all_targets.setChecked(True)
        group = QButtonGroup(self)
        group.addButton(self.all_targets)
        group.addButton(self.some_targets)
        self.target_list = QListWidget()
        self.target_list.setEnabled(False)
        self.target_list.setAlternatingRowColors(True)
        self.targets_status = _note("Loading targets…")
        self.all_targets.toggled.connect(self._scope_changed)
        self.target_list.itemChanged.connect(lambda _item: self.completeChanged.emit())

        targets_box = QGroupBox("Targets")
        targets_layout = QVBoxLayout(targets_box)
        targets_layout.addWidget(self.all_targets)
        targets_layout.addWidget(self.some_targets)
        targets_layout.addWidget(self.target_list, 1)
        targets_layout.addWidget(self.targets_status)

        self.boxes = {
            Category.MISSING: QCheckBox("Missing snapshots: NULL, never snapshotted"),
            Category.BROKEN: QCheckBox(
                "Broken snapshots: bare array, legacy flat, empty object, null values, invalid"
            ),
            Category.STALE: QCheckBox("Stale snapshots: out of date with the current tags"),
        }
        self.boxes[Category.MISSING].setChecked(True)
        self.boxes[Category.STALE].setToolTip(
            "A deeper, slower check: the scan rebuilds every well-formed snapshot to compare it"
        )
        stale_note = _note(
            "Slower: the scan rebuilds every well-formed snapshot to compare it with the stored "
            "one, and a band with stale snapshots is rewritten whole (force mode)."
        )
        stale_note.setContentsMargins(22, 0, 0, 0)
        self.implied = _note()
        for box in self.boxes.values():
            box.toggled.connect(self._categories_changed)
        fix_box = QGroupBox("What to fix")
        fix_layout = QVBoxLayout(fix_box)
        fix_layout.addWidget(self.boxes[Category.MISSING])
        fix_layout.addWidget(self.boxes[Category.BROKEN])
        fix_layout.addWidget(self.boxes[Category.STALE])
        fix_layout.addWidget(stale_note)
        fix_layout.addWidget(self.implied)
        fix_layout.addStretch(1)

        layout = QHBoxLayout(self)
        layout.addWidget(targets_box, 1)
        layout.addWidget(fix_box, 1)
        self._loaded = False
        self._categories_changed()

    def initializePage(self) -> None:
        if not self._loaded:
            self._loaded = True
            self.wiz.runner.run(
                "targets",
                partial(_load_targets, self.wiz.database),
                self._targets_loaded,
                self._targets_failed,
            )

    def _targets_loaded(self, targets: list[TargetChoice]) -> None:
        self.target_list.clear()
        for t in targets:
            item = QListWidgetItem(
                f"{t.title}  (target {t.id}, {t.population_status.replace('_', ' ')})"
            )
            item.setData(Qt.ItemDataRole.UserRole, t.id)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Unchecked)
            self.target_list.addItem(item)
        self.targets_status.setText(f"{len(targets)} targets")
        self.completeChanged.emit()

    def _targets_failed(self, message: str) -> None:
        self.targets_status.setText(f"Could not list the targets: {message}")

    @Slot()
    def _scope_changed(self) -> None:
        self.target_list.setEnabled(self.some_targets.isChecked())
        self.completeChanged.emit()

    @Slot()
    def _categories_changed(self) -> None:
        stale = self.boxes[Category.STALE].isChecked()
        broken = self.boxes[Category.BROKEN].isChecked() or stale
        for category, forced in ((Category.BROKEN, stale), (Category.MISSING, broken)):
            box = self.boxes[category]
            box.blockSignals(True)
            if forced:
                box.setChecked(True)
            box.setEnabled(not forced)
            box.blockSignals(False)
        widest = Category.STALE if stale else Category.BROKEN if broken else Category.MISSING
        note = backfill.implied_note([widest])
        self.implied.setText(f"Note: {note}." if note else "")
        self.completeChanged.emit()

    def set_targets(self, target_ids: list[int] | None) -> None:
        """Choose the scope (None: all targets); the list must be loaded for chosen ids."""
        self.all_targets.setChecked(target_ids is None)
        self.some_targets.setChecked(target_ids is not None)
        wanted = set(target_ids or ())
        for i in range(self.target_list.count()):
            item = self.target_list.item(i)
            checked = item.data(Qt.ItemDataRole.UserRole) in wanted
            item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)

    def set_categories(self, categories) -> None:
        wanted = {Category(c) for c in categories}
        for category in (Category.STALE, Category.BROKEN, Category.MISSING):
            self.boxes[category].setChecked(category in wanted)

    def chosen_target_ids(self) -> list[int] | None:
        if self.all_targets.isChecked():
            return None
        return [
            self.target_list.item(i).data(Qt.ItemDataRole.UserRole)
            for i in range(self.target_list.count())
            if self.target_list.item(i).checkState() == Qt.CheckState.Checked
        ]

    def chosen_categories(self, *, effective: bool = True) -> frozenset[Category]:
        chosen = frozenset(c for c, box in self.boxes.items() if box.isChecked())
        return backfill.effective_categories(chosen) if effective else chosen

    def isComplete(self) -> bool:
        if not self.chosen_categories():
            return False
        ids = self.chosen_target_ids()
        return ids is None or bool(ids)


# --- page 2: scan ---------------------------------------------------------------------------


class ScanModel(QAbstractTableModel):
    """The scan's bands, a checkbox per band that has something to fix (all checked)."""

    COLUMNS = [
        "Target",
        "Band",
        "Population",
        "Missing",
        "Broken",
        "Stale",
        "Mode",
        "Rows to write",
    ]
    checksChanged = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.rows: list[ScanRow] = []
        self.plans: dict[int, BandPlan] = {}
        self.checked: set[int] = set()

    def set_scan(self, result: ScanResult | None, plans: list[BandPlan]) -> None:
        self.beginResetModel()
        self.rows = list(result.rows) if result else []
        self.plans = {p.band_id: p for p in plans}
        self.checked = set(self.plans)
        self.endResetModel()
        self.checksChanged.emit()

    def set_all(self, checked: bool) -> None:
        self.checked = set(self.plans) if checked else set()
        if self.rows:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self.rows) - 1, 0))
        self.checksChanged.emit()

    def checked_plans(self) -> list[BandPlan]:
        return [self.plans[r.band_id] for r in self.rows if r.band_id in self.checked]

    def rowCount(self, parent: Index | None = None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self.rows)

    def columnCount(self, parent: Index | None = None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self.COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = 0):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.COLUMNS[section]
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.ToolTipRole:
            if section == 5:
                return "Well-formed snapshots that differ from a fresh one (the deep check)"
            if section == 7:
                return "Rows the band job will write (force mode: every row of the band)"
        return None

    def flags(self, index: Index) -> Qt.ItemFlag:
        flags = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        if index.column() == 0 and self.rows[index.row()].band_id in self.plans:
            flags |= Qt.ItemFlag.ItemIsUserCheckable
        return flags

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        plan = self.plans.get(row.band_id)
        column = index.column()
        if role == BAND_ROLE:
            return row.band_id
        if role == Qt.ItemDataRole.CheckStateRole and column == 0 and plan is not None:
            checked = row.band_id in self.checked
            return Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked
        values = [
            (row.target_title, f"{row.target_title}\u2002#{row.target_id}"),
            (row.label, f"{row.label}\u2002(band {row.band_id})"),
            (row.population, fmt.count(row.population)),
            (row.missing or 0, _count_cell(row.missing)),
            (row.broken or 0, _count_cell(row.broken)),
            (row.stale or 0, _count_cell(row.stale)),
            (plan.mode.value if plan else "", plan.mode.value if plan else "nothing to fix"),
            (plan.rows if plan else 0, fmt.count(plan.rows) if plan else ""),
        ]
        if role == SORT_ROLE:
            return values[column][0]
        if role == Qt.ItemDataRole.DisplayRole:
            return values[column][1]
        if role == Qt.ItemDataRole.TextAlignmentRole and 2 <= column <= 7 and column != 6:
            return RIGHT
        if role == Qt.ItemDataRole.ForegroundRole:
            if plan is None:
                return DIM
            if column == 4 and row.broken or column == 5 and row.stale:
                return AMBER
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == 4 and row.shapes:
                parts = [
                    f"{SHAPE_TITLES.get(k, k)}: {fmt.count(v)}" for k, v in row.shapes.items() if v
                ]
                return "Broken shapes: " + (", ".join(parts) or "none")
            if column == 6 and plan is not None:
                return MODE_TIPS[plan.mode]
        return None

    def setData(self, index: Index, value, role: int = Qt.ItemDataRole.EditRole) -> bool:
        if role != Qt.ItemDataRole.CheckStateRole or index.column() != 0:
            return False
        band_id = self.rows[index.row()].band_id
        if band_id not in self.plans:
            return False
        state = value if isinstance(value, Qt.CheckState) else Qt.CheckState(int(value))
        if state == Qt.CheckState.Checked:
            self.checked.add(band_id)
        else:
            self.checked.discard(band_id)
        self.dataChanged.emit(index, index, [role])
        self.checksChanged.emit()
        return True


class ScanPage(QWizardPage):
    def __init__(self, wizard: BackfillWizard) -> None:
        super().__init__()
        self.wiz = wizard
        self.setTitle("Scan")
        self.setSubTitle(
            "Counting, in the database, the snapshots to fix in every band of the chosen targets. "
            "Uncheck the bands to leave alone."
        )
        self.setCommitPage(True)
        self.setButtonText(QWizard.WizardButton.CommitButton, "Run backfill")
        self.result: ScanResult | None = None
        self._cancel: CancelFlag | None = None
        self._signals: ScanSignals | None = None
        self._task: ScanTask | None = None

        self.status = QLabel()
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.cancel_button = QPushButton(icon("cancel"), "Cancel scan")
        self.cancel_button.clicked.connect(self.cancel_scan)
        self.rescan_button = QPushButton(icon("reload"), "Scan again")
        self.rescan_button.clicked.connect(self.start_scan)
        self.rescan_button.hide()
        top = QHBoxLayout()
        top.addWidget(self.progress, 1)
        top.addWidget(self.cancel_button)
        top.addWidget(self.rescan_button)

        self.model = ScanModel(self)
        self.model.checksChanged.connect(self._checks_changed)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.view = QTableView()
        self.view.setModel(self.proxy)
        self.view.setSortingEnabled(True)
        self.view.sortByColumn(-1, Qt.SortOrder.AscendingOrder)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setAlternatingRowColors(True)
        self.view.setShowGrid(False)
        self.view.verticalHeader().hide()
        self.view.verticalHeader().setDefaultSectionSize(26)
        header = self.view.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)

        self.check_all = QPushButton("Check all")
        self.check_all.clicked.connect(lambda: self.model.set_all(True))
        self.check_none = QPushButton("Uncheck all")
        self.check_none.clicked.connect(lambda: self.model.set_all(False))
        self.totals = QLabel()
        self.totals.setWordWrap(True)
        self.estimate = _note()
        self.blocked = _note(name="dialogError")
        bottom = QHBoxLayout()
        bottom.addWidget(self.totals, 1)
        bottom.addWidget(self.check_all)
        bottom.addWidget(self.check_none)

        layout = QVBoxLayout(self)
        layout.addWidget(self.status)
        layout.addLayout(top)
        layout.addWidget(self.view, 1)
        layout.addLayout(bottom)
        layout.addWidget(self.estimate)
        layout.addWidget(self.blocked)

    # --- scanning ---------------------------------------------------------------------------

    @property
    def scanning(self) -> bool:
        return self._cancel is not None

    def initializePage(self) -> None:
        self.start_scan()

    def cleanupPage(self) -> None:
        """Back to the scope: stop a scan in flight, forget the result."""
        self.cancel_scan()
        self._show_result(None)

    @Slot()
    def start_scan(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()
        self._show_result(None)
        include = self.wiz.scope_page.chosen_categories()
        names = ", ".join(c.value for c in CATEGORIES if c in include)
        slow = " (with the deep stale check: slower)" if Category.STALE in include else ""
        self.status.setText(f"Scanning for {names} snapshots{slow}…")
        self.progress.setRange(0, 0)
        self.cancel_button.setEnabled(True)
        self.cancel_button.show()
        self.rescan_button.hide()
        self._cancel = cancel = CancelFlag()
        app = QCoreApplication.instance()
        signals = ScanSignals(app)
        for ended in (signals.finished, signals.cancelled, signals.failed):
            ended.connect(signals.deleteLater)
        app.aboutToQuit.connect(cancel.cancel)  # quitting never waits for a deep check
        signals.progress.connect(self._on_progress)
        signals.finished.connect(partial(self._on_finished, cancel))
        signals.cancelled.connect(partial(self._on_cancelled, cancel))
        signals.failed.connect(partial(self._on_failed, cancel))
        self._signals = signals
        task = ScanTask(
            self.wiz.database, self.wiz.scope_page.chosen_target_ids(), include, cancel, signals
        )
        self._task = task
        QThreadPool.globalInstance().start(task)
        self.completeChanged.emit()

    @Slot()
    def cancel_scan(self) -> None:
        if self._cancel is None:
            return
        self._cancel.cancel()
        self.cancel_button.setEnabled(False)
        self.status.setText("Cancelling the scan…")

    def wait(self, timeout_ms: int = 10000) -> bool:
        """Until the latest scan has ended (cancel it first to make that quick)."""
        return self._task is None or self._task.ended.wait(timeout_ms / 1000)

    def _current(self, cancel: CancelFlag) -> bool:
        """Only the latest scan's signals count; older ones were cancelled and replaced."""
        with contextlib.suppress(RuntimeError, TypeError, SystemError):
            QCoreApplication.instance().aboutToQuit.disconnect(cancel.cancel)
        if cancel is not self._cancel:
            return False
        self._cancel = None
        self.cancel_button.hide()
        self.rescan_button.show()
        self.progress.setRange(0, 1)
        return True

    @Slot(int, int, str)
    def _on_progress(self, done: int, total: int, message: str) -> None:
        if self._cancel is None or total <= 0:
            return
        scale = max(1, total // 1_000_000 + 1)  # keep within a QProgressBar's int range
        self.progress.setRange(0, total // scale)
        self.progress.setValue(done // scale)
        self.progress.setFormat(f"%p %  {message}")

    def _on_finished(self, cancel: CancelFlag, result: ScanResult) -> None:
        if not self._current(cancel):
            return
        self.progress.setValue(1)
        self.progress.setFormat("done")
        self.status.setText(f"Scanned {len(result.rows)} bands in {fmt.duration(result.seconds)}.")
        self._show_result(result)

    def _on_cancelled(self, cancel: CancelFlag) -> None:
        if not self._current(cancel):
            return
        self.progress.setValue(0)
        self.progress.setFormat("cancelled")
        self.status.setText("Scan cancelled. Nothing was changed.")

    def _on_failed(self, cancel: CancelFlag, message: str) -> None:
        if not self._current(cancel):
            return
        self.progress.setValue(0)
        self.progress.setFormat("failed")
        self.status.setText(f"The scan failed: {message}")

    def _show_result(self, result: ScanResult | None) -> None:
        self.result = result
        plans = backfill.plan(result) if result else []
        self.model.set_scan(result, plans)
        self.view.setEnabled(result is not None)
        self.check_all.setEnabled(bool(plans))
        self.check_none.setEnabled(bool(plans))
        self.view.resizeColumnsToContents()
        self._checks_changed()

    # --- selection, totals, estimate --------------------------------------------------------

    def chosen_plans(self) -> list[BandPlan]:
        return self.model.checked_plans()

    def set_checked(self, band_id: int, checked: bool) -> None:
        for row in range(self.proxy.rowCount()):
            index = self.proxy.index(row, 0)
            if index.data(BAND_ROLE) == band_id:
                state = Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked
                self.proxy.setData(index, state, Qt.ItemDataRole.CheckStateRole)
                return
        raise KeyError(band_id)

    def parallel(self, bands: int) -> int:
        return max(1, min(bands, getattr(self.wiz.controller, "max_threads", 2) or 2))

    @Slot()
    def _checks_changed(self) -> None:
        result = self.result
        if result is None:
            self.totals.setText("")
            self.estimate.setText("")
            self.blocked.setText("")
            self.completeChanged.emit()
            return
        plans = self.chosen_plans()
        ids = [p.band_id for p in plans]
        totals = result.totals(ids)
        everything = result.totals()
        counted = [c for c in CATEGORIES if c in result.include]
        found = ", ".join(f"{fmt.count(everything[c.value])} {c.value}" for c in counted)
        rows = sum(p.rows for p in plans)
        chosen = ", ".join(f"{fmt.count(totals[c.value])} {c.value}" for c in counted)
        self.totals.setText(
            f"<b>Found</b> {found} in {len(result.rows)} bands. "
            f"<b>Chosen</b>: {len(plans)} of {len(self.model.plans)} bands to fix, {chosen}: "
            f"<b>{fmt.count(rows)} rows to write</b>."
        )
        parallel = self.parallel(len(plans))
        seconds = backfill.estimate_seconds(
            result, result.rows_per_second, band_ids=ids, parallel=parallel
        )
        if not plans:
            self.estimate.setText("Nothing to run: no checked band has anything to fix.")
        elif seconds is None:
            self.estimate.setText("Estimated duration: unknown (no rate could be measured).")
        else:
            self.estimate.setText(
                f"Estimated duration: about {fmt.duration(max(seconds, 0.1))} "
                f"({fmt.rate(result.rows_per_second)} measured on this database, "
                f"{parallel} band{'s' * (parallel != 1)} at a time)."
            )
        self.blocked.setText(self.wiz.write_block() or "")
        self.completeChanged.emit()

    def isComplete(self) -> bool:
        return (
            self.result is not None
            and not self.scanning
            and bool(self.chosen_plans())
            and self.wiz.write_block() is None
        )


# --- page 3: run ----------------------------------------------------------------------------


class BandProgress:
    """One band job as a line of the Run page's grid: name, mode, progress bar, state."""

    def __init__(self, plan: BandPlan, grid: QGridLayout, line: int) -> None:
        row = plan.row
        self.name = QLabel(
            f"<b>{escape(row.target_title)}</b> · {escape(row.label)} "
            f"<small>(band {row.band_id})</small>"
        )
        self.mode = QLabel(plan.mode.value)
        self.mode.setToolTip(MODE_TIPS[plan.mode])
        self.bar = QProgressBar()
        self.bar.setRange(0, max(1, plan.rows))
        self.bar.setValue(0)
        self.bar.setFormat(f"0 / {fmt.count(plan.rows)} rows")
        self.state = QLabel("queued")
        self.state.setMinimumWidth(220)
        self.widgets = (self.name, self.mode, self.bar, self.state)
        for column, widget in enumerate(self.widgets):
            grid.addWidget(widget, line, column)

    def remove(self) -> None:
        for widget in self.widgets:
            widget.deleteLater()

    def show_job(self, info: JobInfo, planned: int) -> None:
        total = info.rows_total or planned
        done = info.rows_done
        if info.state is JobState.SUCCEEDED:
            done = total
        self.bar.setRange(0, max(1, total))
        self.bar.setValue(min(done, max(1, total)))
        self.bar.setFormat(f"{fmt.count(done)} / {fmt.count(total)} rows")
        text = STATE_TEXT.get(info.state, str(info.state))
        color = None
        if info.state is JobState.RUNNING and info.batches:
            text = f"batch {info.batch} of {info.batches}"
            if info.eta is not None:
                text += f", {fmt.duration(info.eta)} left"
        elif info.state is JobState.RUNNING:
            text = "computing the snapshots, then the first batch…"
        elif info.state is JobState.RETRYING:
            text = f"retrying (attempt {info.attempt} of {info.max_attempts})"
            color = AMBER
        elif info.state is JobState.FAILED:
            text = f"failed: {info.error or 'unknown error'}"
            color = RED
        elif info.state is JobState.SUCCEEDED:
            text = f"succeeded in {fmt.duration(info.elapsed)}"
            color = GREEN
        metrics = self.state.fontMetrics()
        self.state.setText(metrics.elidedText(text, Qt.TextElideMode.ElideRight, 320))
        self.state.setToolTip(text)
        self.state.setStyleSheet(f"color: {color.name()}" if color else "")

    def show_counting(self) -> None:
        self.state.setText(self.state.text() + " · counting…")


@dataclass
class _Track:
    job_id: int
    plan: BandPlan
    ended: bool = False
    counted: bool = False


class RunPage(QWizardPage):
    def __init__(self, wizard: BackfillWizard) -> None:
        super().__init__()
        self.wiz = wizard
        self.setTitle("Run")
        self.setSubTitle(
            "Every chosen band is a job on the window's job controller; they run in parallel. "
            "Cancel all stops each job after its batch in flight: what was written stays valid."
        )
        self.setCommitPage(True)
        self.setButtonText(QWizard.WizardButton.CommitButton, "Summary")
        self.tracks: dict[int, _Track] = {}  # job id -> track
        self.band_job: dict[int, int] = {}  # band id -> its latest job id
        self.rows: dict[int, BandProgress] = {}  # band id -> its progress row
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self._connected = False

        self.overall = QProgressBar()
        self.overall_label = QLabel()
        self.cancel_button = QPushButton(icon("cancel-all"), "Cancel all")
        self.cancel_button.clicked.connect(self.cancel_all)
        top = QGridLayout()
        top.addWidget(QLabel("<b>Overall</b>"), 0, 0)
        top.addWidget(self.overall, 0, 1)
        top.addWidget(self.cancel_button, 0, 2)
        top.addWidget(self.overall_label, 1, 1, 1, 2)
        top.setColumnStretch(1, 1)
        self.list_widget = QWidget()
        outer = QVBoxLayout(self.list_widget)
        outer.setContentsMargins(0, 0, 0, 0)
        self.grid = QGridLayout()
        self.grid.setHorizontalSpacing(12)
        self.grid.setVerticalSpacing(4)
        self.grid.setColumnStretch(2, 1)
        outer.addLayout(self.grid)
        outer.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.list_widget)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(scroll, 1)
        self._timer = QTimer(self)
        self._timer.setInterval(500)
        self._timer.timeout.connect(self._update_overall)

    def initializePage(self) -> None:
        if not self._connected:
            self._connected = True
            self.wiz.controller.jobChanged.connect(self._job_changed)
            self.wiz.controller.jobFinished.connect(self._job_finished)
        self.wiz.outcomes.clear()
        self.wiz.previous.clear()
        self.tracks.clear()
        self.band_job.clear()
        for row in self.rows.values():
            row.remove()
        self.rows.clear()
        for line, plan in enumerate(self.wiz.scan_page.chosen_plans()):
            self.rows[plan.band_id] = BandProgress(plan, self.grid, line)
            self._submit(plan)
        self._started()

    def _submit(self, plan: BandPlan) -> None:
        row = plan.row
        job_id = self.wiz.controller.submit_band(
            plan.band_id,
            target_id=row.target_id,
            label=f"{row.target_title} · {row.label} (backfill)",
            mode=plan.mode.value,
        )
        self._track(job_id, plan)

    def _track(self, job_id: int, plan: BandPlan) -> None:
        self.tracks[job_id] = _Track(job_id, plan)
        self.band_job[plan.band_id] = job_id
        info = self.wiz.controller.job(job_id)
        self.rows[plan.band_id].show_job(info, plan.rows)
        if not info.active:  # ended before we looked (a queued job cancelled at once)
            self._job_finished(job_id)

    def _started(self) -> None:
        self.started_at = time.monotonic()
        self.ended_at = None
        self.cancel_button.setEnabled(True)
        self._timer.start()
        self._update_overall()
        self.completeChanged.emit()

    def retry(self, band_ids: list[int]) -> None:
        """Retry these bands' last jobs (the Summary's Retry failed)."""
        for band_id in band_ids:
            old = self.band_job[band_id]
            plan = self.tracks[old].plan
            self.wiz.previous[band_id] = self.wiz.outcomes.pop(band_id)
            self._track(self.wiz.controller.retry(old), plan)
        self._started()

    @property
    def running(self) -> bool:
        return any(not t.ended for t in self.tracks.values())

    @property
    def wall_seconds(self) -> float | None:
        """How long the run (or the last retry) took, once every job has ended."""
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at

    def live_jobs(self) -> list[int]:
        return [t.job_id for t in self.tracks.values() if not t.ended]

    @Slot()
    def cancel_all(self) -> None:
        """Cancel this wizard's jobs only; other jobs of the window keep running."""
        for job_id in self.live_jobs():
            self.wiz.controller.cancel(job_id)
        self.cancel_button.setEnabled(False)
        self.overall_label.setText("Cancelling: each job stops after its batch in flight…")

    @Slot(int)
    def _job_changed(self, job_id: int) -> None:
        track = self.tracks.get(job_id)
        if track is None or self.band_job.get(track.plan.band_id) != job_id:
            return
        self.rows[track.plan.band_id].show_job(self.wiz.controller.job(job_id), track.plan.rows)

    @Slot(int)
    def _job_finished(self, job_id: int) -> None:
        track = self.tracks.get(job_id)
        if track is None or track.ended:
            return
        track.ended = True
        info = self.wiz.controller.job(job_id)
        row = self.rows[track.plan.band_id]
        row.show_job(info, track.plan.rows)
        row.show_counting()
        self.wiz.runner.run(
            f"count {job_id}",
            partial(_count_after, self.wiz.database, track.plan.band_id, track.plan.categories),
            partial(self._counted, job_id),
            partial(self._count_failed, job_id),
        )
        self._update_overall()

    def _counted(self, job_id: int, after: ScanRow | None, error: str | None = None) -> None:
        track = self.tracks[job_id]
        info = self.wiz.controller.job(job_id)
        band_id = track.plan.band_id
        previous = self.wiz.previous.get(band_id)
        message = info.error if info.state is JobState.FAILED else None
        if error:
            note = f"could not count the rows after the job: {error}"
            message = f"{message}; {note}" if message else note
        self.wiz.outcomes[band_id] = BandOutcome(
            track.plan.row,
            track.plan.mode,
            info.state,
            after,
            rows_written=info.rows_written + (previous.rows_written if previous else 0),
            attempts=info.attempt + (previous.attempts if previous else 0),
            duration=info.elapsed + (previous.duration if previous else 0.0),
            error=message,
            categories=track.plan.categories,
        )
        track.counted = True
        self.rows[band_id].show_job(info, track.plan.rows)
        self._update_overall()
        self.completeChanged.emit()

    def _count_failed(self, job_id: int, message: str) -> None:
        self._counted(job_id, None, message)

    @Slot()
    def _update_overall(self) -> None:
        controller = self.wiz.controller
        done = total = 0
        for job_id in self.band_job.values():
            track = self.tracks[job_id]
            info = controller.job(job_id)
            band_total = info.rows_total or track.plan.rows
            total += band_total
            done += band_total if track.ended else min(info.rows_done, band_total)
        ended = sum(1 for j in self.band_job.values() if self.tracks[j].ended)
        scale = max(1, total // 1_000_000 + 1)
        self.overall.setRange(0, max(1, total // scale))
        self.overall.setValue(done // scale)
        self.overall.setFormat(f"{fmt.count(done)} / {fmt.count(total)} rows")
        now = self.ended_at or time.monotonic()
        elapsed = now - (self.started_at or now)
        text = f"{ended} of {len(self.band_job)} bands ended · {fmt.duration(elapsed)} elapsed"
        if self.running:
            if done and elapsed > 0:
                left = (total - done) / (done / elapsed)
                text += f" · about {fmt.duration(left)} left"
            else:
                text += " · time left: measuring…"
        else:
            self.ended_at = self.ended_at or now
            self._timer.stop()
            self.cancel_button.setEnabled(False)
            failed = [o for o in self.wiz.outcomes.values() if o.failed]
            text += " · finished" + (f", {len(failed)} not succeeded" if failed else "")
        if self.cancel_button.isEnabled() or not self.running:
            self.overall_label.setText(text)

    def isComplete(self) -> bool:
        return bool(self.tracks) and all(t.ended and t.counted for t in self.tracks.values())


# --- page 4: summary ------------------------------------------------------------------------


class SummaryPage(QWizardPage):
    COLUMNS = [
        "Target",
        "Band",
        "Mode",
        "Result",
        "Missing fixed",
        "Broken fixed",
        "Stale fixed",
        "Still to fix",
        "Time",
        "Error",
    ]
    WIDTHS = (160, 124, 60, 100, 100, 96, 86, 84, 56)

    def __init__(self, wizard: BackfillWizard) -> None:
        super().__init__()
        self.wiz = wizard
        self.setTitle("Summary")
        self.setSubTitle("Rows fixed per band and category, counted again after each job.")
        self.headline = QLabel()
        self.headline.setWordWrap(True)
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        for column, width in enumerate(self.WIDTHS):
            header.resizeSection(column, width)
        header.setStretchLastSection(True)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        self.note = _note()
        self.retry_button = QPushButton(icon("state-retrying"), "Retry failed")
        self.retry_button.clicked.connect(self.wiz.retry_failed)
        self.save_button = QPushButton("Save report as CSV…")
        self.save_button.clicked.connect(self._save_clicked)
        self.saved = _note()
        buttons = QHBoxLayout()
        buttons.addWidget(self.retry_button)
        buttons.addWidget(self.save_button)
        buttons.addWidget(self.saved, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.headline)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.note)
        layout.addLayout(buttons)

    def outcomes(self) -> list[BandOutcome]:
        """In the scan's order (the order the jobs were submitted)."""
        return [self.wiz.outcomes[b] for b in self.wiz.run_page.band_job if b in self.wiz.outcomes]

    def initializePage(self) -> None:
        outcomes = self.outcomes()
        self.table.setSortingEnabled(False)
        self.table.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        self.table.setRowCount(len(outcomes))
        for r, o in enumerate(outcomes):
            remaining = [o.remaining(c) for c in CATEGORIES]
            still = None if o.after is None else sum(v or 0 for v in remaining)
            cells = [
                (o.before.target_title, o.before.target_title),
                (f"{o.before.label} (band {o.band_id})", o.band_id),
                (o.mode.value if o.mode else "", o.mode.value if o.mode else ""),
                (str(o.state), str(o.state)),
                *((_count_cell(o.fixed(c)), o.fixed(c) or 0) for c in CATEGORIES),
                ("?" if still is None else fmt.count(still), still or 0),
                (fmt.duration(o.duration), o.duration),
                (o.error or "", o.error or ""),
            ]
            for c, (text, key) in enumerate(cells):
                item = _SortItem(text, key)
                if 4 <= c <= 8:
                    item.setTextAlignment(RIGHT)
                if c == 3:
                    color = GREEN if o.state is JobState.SUCCEEDED else RED
                    item.setForeground(color)
                    item.setIcon(icon(f"state-{o.state.value}"))
                if c == 0:
                    item.setToolTip(f"{o.before.target_title} (target {o.before.target_id})")
                if c == 9 and o.error:
                    item.setToolTip(o.error)
                    item.setForeground(RED)
                self.table.setItem(r, c, item)
        self.table.setSortingEnabled(True)
        ok = [o for o in outcomes if not o.failed]
        failed = [o for o in outcomes if o.failed]
        fixed = {c: sum(o.fixed(c) or 0 for o in outcomes) for c in CATEGORIES}
        wall = self.wiz.run_page.wall_seconds
        parts = ", ".join(
            f"{fmt.count(v)} {c.value}" for c, v in fixed.items() if c in self._counted()
        )
        text = (
            f"<b>{len(ok)} of {len(outcomes)} bands succeeded</b>: "
            f"{fmt.count(sum(fixed.values()))} rows fixed ({parts})"
            + (f" in {fmt.duration(wall)}." if wall is not None else ".")
        )
        if failed:
            text += (
                f" <span style='color:#b91c1c'><b>{len(failed)} failed or cancelled</b>: their "
                "data stays valid; Retry failed runs them again.</span>"
            )
        self.headline.setText(text)
        unchanged = sum(o.rewritten_unchanged for o in outcomes)
        still = sum(
            sum(o.remaining(c) or 0 for c in CATEGORIES) for o in outcomes if o.after is not None
        )
        notes = [
            f"<span style='color:#b91c1c'>{escape(o.before.target_title)} · "
            f"{escape(o.before.label)} (band {o.band_id}) {o.state}: "
            f"{escape(o.error or 'no error reported')}</span>"
            for o in failed[:5]
        ]
        if len(failed) > 5:
            notes.append(f"… and {len(failed) - 5} more (see the Error column).")
        if unchanged:
            notes.append(
                f"Force mode also rewrote {fmt.count(unchanged)} current snapshots with the same "
                "value (new updated_at)."
            )
        if still:
            notes.append(
                f"{fmt.count(still)} rows still need fixing: rows of failed or cancelled bands, "
                "rows added meanwhile, or tags with blank values that rebuild as null values."
            )
        self.note.setText("<br>".join(notes))
        self.retry_button.setEnabled(bool(failed))
        self.saved.setText("")

    def _counted(self) -> frozenset[Category]:
        result = self.wiz.scan_page.result
        return result.include if result else frozenset(CATEGORIES)

    def save_report(self, path: str) -> None:
        backfill.report_csv(self.outcomes(), path)
        self.saved.setText(f"Saved {path}")

    @Slot()
    def _save_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save backfill report", "backfill-report.csv", "CSV files (*.csv)"
        )
        if not path:
            return
        try:
            self.save_report(path)
        except OSError as exc:
            QMessageBox.warning(self, "Save report", f"Could not save the report:\n{exc}")


class _SortItem(QTableWidgetItem):
    """A cell that sorts by a key (numbers as numbers) and shows its text."""

    def __init__(self, text: str, key) -> None:
        super().__init__(text)
        self.key = key

    def __lt__(self, other: QTableWidgetItem) -> bool:
        key = getattr(other, "key", None)
        try:
            return self.key < key
        except TypeError:
            return str(self.key) < str(key)


# --- the wizard -----------------------------------------------------------------------------


class BackfillWizard(QWizard):
    """Tools > Backfill snapshots…; jobs run on the window's ``controller``."""

    def __init__(
        self, database: Database, controller: JobController, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.database = database
        self.controller = controller
        self.setWindowTitle("Backfill snapshots")
        self.setWindowIcon(icon("snapshot-repair"))
        self.setWizardStyle(QWizard.WizardStyle.ModernStyle)
        self.setOption(QWizard.WizardOption.NoBackButtonOnStartPage, True)
        self.setOption(QWizard.WizardOption.NoBackButtonOnLastPage, True)
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.resize(1040, 660)
        self.runner = TaskRunner(self, threads=2)
        self.runner.secret = database.url
        self.outcomes: dict[int, BandOutcome] = {}  # band id -> latest outcome
        self.previous: dict[int, BandOutcome] = {}  # band id -> outcome before a retry
        self.scope_page = ScopePage(self)
        self.scan_page = ScanPage(self)
        self.run_page = RunPage(self)
        self.summary_page = SummaryPage(self)
        self.setPage(Page.SCOPE, self.scope_page)
        self.setPage(Page.SCAN, self.scan_page)
        self.setPage(Page.RUN, self.run_page)
        self.setPage(Page.SUMMARY, self.summary_page)
        self.setStartId(Page.SCOPE)

    def write_block(self) -> str | None:
        """Why this session may not run the backfill, or None."""
        if self.database.read_only:
            return "Connected read-only: the scan works, the run is disabled."
        missing = missing_privileges(self.database, *SNAPSHOT_PRIVILEGES)
        if missing:
            return f"This role lacks {', '.join(missing)}: the run is disabled."
        return None

    @property
    def running(self) -> bool:
        return self.run_page.running

    @Slot()
    def retry_failed(self) -> None:
        """Run the bands that did not succeed again, and show them on the Run page."""
        bands = [band_id for band_id, o in self.outcomes.items() if o.failed]
        if not bands or self.running:
            return
        self.run_page.retry(bands)
        if self.currentId() == Page.SUMMARY:
            self.back()

    def confirm_close(self) -> bool:
        jobs = len(self.run_page.live_jobs())
        answer = QMessageBox.question(
            self,
            "Backfill is running",
            f"{jobs} band job{'s' * (jobs != 1)} of this backfill {'are' if jobs != 1 else 'is'} "
            "still running. Cancel them and close? Each stops after its batch in flight; what "
            "was written stays valid.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def reject(self) -> None:
        """Cancel, Esc and the window's close button: ask first while jobs run."""
        if self.running:
            if not self.confirm_close():
                return
            self.run_page.cancel_all()
        self.scan_page.cancel_scan()
        super().reject()

    def done(self, result: int) -> None:
        # Let the scan and the recounts end before their receivers go away.
        self.scan_page.cancel_scan()
        self.scan_page.wait(10000)
        self.runner.wait(10000)
        super().done(result)
