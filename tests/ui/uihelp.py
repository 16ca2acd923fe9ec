"""Helpers shared by the window tests (imported as ``uihelp``: pytest puts this folder on the path)."""

from __future__ import annotations

import os
import subprocess
import sys

from PySide6.QtWidgets import QApplication, QMessageBox

from qsnap_gui.ui.models import BandsModel
from qsnap_gui.ui.window import MainWindow


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def select_target(window: MainWindow, qtbot, target_id: int) -> None:
    if window.bands_model.target_id == target_id:
        return
    with qtbot.waitSignal(window.loaded, timeout=30_000):
        window.select_target(target_id)


def select_band(window: MainWindow, band_id: int) -> None:
    row = next(i for i, b in enumerate(window.bands_model.bands()) if b.id == band_id)
    window.bands_view.selectRow(row)
    assert window.current_band().id == band_id


def band(window: MainWindow, band_id: int):
    return next(b for b in window.bands_model.bands() if b.id == band_id)


def job_cell(window: MainWindow, band_id: int) -> str:
    row = next(i for i, b in enumerate(window.bands_model.bands()) if b.id == band_id)
    return window.bands_model.index(row, BandsModel.JOB).data()


def target_cell(window: MainWindow, target_id: int, column: int) -> str:
    row = window.targets_model.row_of(target_id)
    return window.targets_model.index(row, column).data()


def bands_by_size(sql, target_id: int) -> list[int]:
    """The target's band ids, most populations first."""
    rows = sql.execute(
        "select b.id from target_bands b left join target_populations p on p.target_band_id = b.id "
        "where b.target_id = %s group by b.id order by count(p.id) desc, b.id",
        (target_id,),
    )
    return [r[0] for r in rows]


def null_out(sql, band_ids: list[int]) -> None:
    sql.execute(
        "update target_populations set matching_tags_snapshot = null "
        "where target_band_id = any(%s)",
        (band_ids,),
    )


def answer_yes(monkeypatch) -> list[str]:
    """Every confirmation is accepted; returns the texts asked."""
    asked: list[str] = []

    def question(parent, title, text, *args):
        asked.append(text)
        return QMessageBox.StandardButton.Yes

    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    return asked


def retry_from_jobs_menu(window: MainWindow, job_id: int) -> None:
    """Right-click the job's row in the Jobs dock and choose Retry."""
    row = next(
        r for r in range(window.jobs_model.rowCount()) if window.jobs_model.info(r).id == job_id
    )
    view = window.jobs_view
    view.scrollTo(window.jobs_model.index(row, 0))
    view.customContextMenuRequested.emit(view.visualRect(window.jobs_model.index(row, 1)).center())
    menu = QApplication.activePopupWidget()
    assert menu is not None and window.act_retry in menu.actions()
    assert window.act_retry.isEnabled(), window.act_retry.toolTip()
    menu.close()
    window.act_retry.trigger()


def run_gui(*args: str, tmp_path) -> subprocess.CompletedProcess:
    """``qsnap-gui`` in a subprocess, offscreen, with settings of its own."""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    return subprocess.run(
        [sys.executable, "-m", "qsnap_gui.ui.app", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
