"""File > Preferences…: batch size, job threads, retry backoff and which confirmations to ask."""

from __future__ import annotations

from PySide6.QtCore import Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from qsnap_gui.ui.icons import icon
from qsnap_gui.ui.jobs import default_threads
from qsnap_gui.ui.settings import Preferences


class PreferencesDialog(QDialog):
    def __init__(self, preferences: Preferences, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Preferences")
        self.setWindowIcon(icon("preferences"))
        self.batch_size = QSpinBox()
        self.batch_size.setRange(1, 1_000_000)  # as the command line's --batch-size
        self.batch_size.setSingleStep(100)
        self.batch_size.setGroupSeparatorShown(True)
        self.batch_size.setSuffix(" rows")
        self.batch_size.setToolTip("Rows written per transaction by a snapshot job")
        self.threads = QSpinBox()
        self.threads.setRange(0, 64)
        self.threads.setSpecialValueText(f"automatic ({default_threads()})")
        self.threads.setToolTip(
            "Band jobs running at once; automatic is one per band up to the number of CPUs"
        )
        self.backoff = QDoubleSpinBox()
        self.backoff.setRange(0.0, 60.0)
        self.backoff.setDecimals(2)
        self.backoff.setSuffix(" s")
        self.backoff.setToolTip("Wait before the second attempt of a failed job; doubles after")
        self.confirm_refresh = QCheckBox("Before Refresh Population")
        self.confirm_force = QCheckBox("Before a forced re-snapshot")
        self.confirm_depopulate = QCheckBox("Before Depopulate")
        self.confirm_close = QCheckBox("Before closing while jobs run")

        jobs = QGroupBox("Jobs")
        jobs_form = QFormLayout(jobs)
        jobs_form.addRow("Batch size", self.batch_size)
        jobs_form.addRow("Threads", self.threads)
        jobs_form.addRow("Retry backoff", self.backoff)
        confirmations = QGroupBox("Ask for confirmation")
        confirm_layout = QVBoxLayout(confirmations)
        for box in (
            self.confirm_refresh,
            self.confirm_force,
            self.confirm_depopulate,
            self.confirm_close,
        ):
            confirm_layout.addWidget(box)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok
            | QDialogButtonBox.StandardButton.Cancel
            | QDialogButtonBox.StandardButton.RestoreDefaults
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        buttons.button(QDialogButtonBox.StandardButton.RestoreDefaults).clicked.connect(
            self._defaults
        )
        layout = QVBoxLayout(self)
        layout.addWidget(jobs)
        layout.addWidget(confirmations)
        layout.addWidget(buttons)
        self._show(preferences)

    def _show(self, p: Preferences) -> None:
        self.batch_size.setValue(p.batch_size)
        self.threads.setValue(p.threads)
        self.backoff.setValue(p.retry_backoff)
        self.confirm_refresh.setChecked(p.confirm_refresh)
        self.confirm_force.setChecked(p.confirm_force)
        self.confirm_depopulate.setChecked(p.confirm_depopulate)
        self.confirm_close.setChecked(p.confirm_close)

    @Slot()
    def _defaults(self) -> None:
        self._show(Preferences())

    def preferences(self) -> Preferences:
        return Preferences(
            batch_size=self.batch_size.value(),
            threads=self.threads.value(),
            retry_backoff=self.backoff.value(),
            confirm_refresh=self.confirm_refresh.isChecked(),
            confirm_force=self.confirm_force.isChecked(),
            confirm_depopulate=self.confirm_depopulate.isChecked(),
            confirm_close=self.confirm_close.isChecked(),
        )
