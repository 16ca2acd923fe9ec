"""Page 1: which targets, and which kinds of snapshot to fix. Nothing is written yet."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QGroupBox,
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QRadioButton,
    QVBoxLayout,
    QWizardPage,
)

from qsnap_gui.engine import backfill, views
from qsnap_gui.engine.backfill import Category, TargetChoice
from qsnap_gui.ui.backfill.common import note

if TYPE_CHECKING:
    from qsnap_gui.ui.backfill.wizard import BackfillWizard


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
        self.targets_status = note("Loading targets…")
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
        stale_note = note(
            "Slower: the scan rebuilds every well-formed snapshot to compare it with the stored "
            "one, and a band with stale snapshots is rewritten whole (force mode)."
        )
        stale_note.setContentsMargins(22, 0, 0, 0)
        self.implied = note()
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
                partial(views.target_choices, self.wiz.database),
                self._targets_loaded,
                self._targets_failed,
            )

    def _targets_loaded(self, targets: list[TargetChoice]) -> None:
        self.target_list.clear()
        for t in targets:
            status = t.population_status.replace("_", " ")
            item = QListWidgetItem(f"{t.title}  (target {t.id}, {status})")
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
        implied = backfill.implied_note([widest])
        self.implied.setText(f"Note: {implied}." if implied else "")
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
