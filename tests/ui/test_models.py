"""Every item model of the window passes pytest-qt's model tester, loaded and while jobs change it."""

from __future__ import annotations

import logging

import pytest
from PySide6.QtCore import Qt
from pytestqt.modeltest import ModelTester
from uihelp import select_band, select_target, target_cell

from qsnap_gui.engine.targets import TargetRow
from qsnap_gui.ui.models import ERROR_TEXT, JobsModel, TargetsModel, TargetsProxy

DecorationRole = Qt.ItemDataRole.DecorationRole

MODELS = ["targets_model", "targets_proxy", "bands_model", "jobs_model"]


@pytest.mark.qt_log_level_fail("WARNING")
@pytest.mark.qt_log_ignore("propagateSizeHints")
@pytest.mark.parametrize("name", MODELS)
def test_model_passes_the_model_tester(name, database, make_window, qtbot, qtmodeltester, request):
    window = make_window(database, batch_size=100)
    select_target(window, qtbot, 1)
    model = getattr(window, name)
    qtmodeltester.check(model)  # Qt's C++ tester: it reports through Qt warnings
    ModelTester(request.config).check(model, force_py=True)  # pytest-qt's own: it asserts

    # Keep both watching while the model changes: jobs, reloads, another target, a filter.
    first = window.bands_model.bands()[0].id
    select_band(window, first)
    window.act_snap_force.trigger()
    qtbot.waitUntil(lambda: not window.controller.active(), timeout=60_000)
    with qtbot.waitSignal(window.loaded, timeout=30_000):
        window.reload()
    select_target(window, qtbot, 2)
    window.filter.setText("re")
    window.filter.clear()
    window.targets_view.sortByColumn(5, window.targets_view.horizontalHeader().sortIndicatorOrder())
    qtbot.waitUntil(  # a filter that hides the selected target moves the selection
        lambda: (
            window.bands_model.rowCount() > 0
            and window.bands_model.target_id == window.current_target().id
        ),
        timeout=30_000,
    )
    assert model.rowCount() > 0


# --- a NULL title or status, and a model method that raises ----------------------------------


def target_row(target_id: int, title: str | None, status: str | None, **counts) -> TargetRow:
    values = {"population": 0, "missing": 0, **counts}
    return TargetRow(target_id, title, status, None, **values)


class UnreadableTitle(TargetRow):
    """A row whose title cannot be read: stands for any bug inside a model's data()."""

    @property
    def display_title(self) -> str:
        raise ValueError("title unreadable")


def test_a_null_title_reads_untitled(qtmodeltester):
    model = TargetsModel()
    model.set_rows([target_row(5, None, "not_populated"), target_row(6, "Renters", "populated")])
    qtmodeltester.check(model)
    assert model.index(0, TargetsModel.TITLE).data() == "(untitled #5)"
    assert model.index(0, TargetsModel.STATUS).data() == "not populated"
    assert not model.index(0, TargetsModel.STATUS).data(DecorationRole).isNull()
    proxy = TargetsProxy()
    proxy.setSourceModel(model)
    proxy.sort(TargetsModel.TITLE)
    assert [proxy.index(r, TargetsModel.ID).data() for r in range(2)] == ["5", "6"]


def test_an_exception_in_data_is_an_error_cell_logged_once(qtmodeltester, caplog):
    model = TargetsModel()
    model.set_rows(
        [target_row(7, "Renters", "populated"), UnreadableTitle(8, "x", "populated", None, 0, 0, 0)]
    )
    with caplog.at_level(logging.ERROR, logger="qsnap_gui.ui.models.base"):
        qtmodeltester.check(model)
        cell = model.index(1, TargetsModel.TITLE)
        for _ in range(3):
            assert cell.data() == ERROR_TEXT
        assert "ValueError: title unreadable" in cell.data(Qt.ItemDataRole.ToolTipRole)
    assert model.index(1, TargetsModel.ID).data() == "8"  # the rest of the row still shows
    assert model.index(0, TargetsModel.TITLE).data() == "Renters"
    logged = [r for r in caplog.records if "title unreadable" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None


def test_an_exception_in_row_count_is_an_empty_table(qtmodeltester, caplog):
    class Failing(JobsModel):
        def rowCount(self, parent=None) -> int:
            raise RuntimeError("rows unreadable")

    model = Failing()
    with caplog.at_level(logging.ERROR, logger="qsnap_gui.ui.models.base"):
        qtmodeltester.check(model)
        assert model.rowCount() == 0
    assert any("rows unreadable" in r.getMessage() for r in caplog.records)


def test_the_window_shows_a_null_title_and_status(database, sql, make_window, qtbot):
    sql.execute("update targets set title = null, population_status = null where id = 4")
    sql.execute(
        "delete from target_populations where target_band_id in "
        "(select id from target_bands where target_id = 4)"
    )
    window = make_window(database)
    assert target_cell(window, 4, TargetsModel.TITLE) == "(untitled #4)"
    assert target_cell(window, 4, TargetsModel.STATUS) == "not populated"
    select_target(window, qtbot, 4)
    assert window.target_title.text() == "(untitled #4)"
    window.update_actions()
    assert not window.act_depopulate.isEnabled()
    assert "nothing to depopulate" in window.act_depopulate.toolTip()
