"""The window hosts the inspector, the band population view and the backfill wizard."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication
from uihelp import select_band, select_target

from qsnap_gui.ui.backfill import BackfillWizard, Page
from qsnap_gui.ui.inspector import BandPopulationView


def test_ctrl_f_search_opens_the_me_file_in_the_inspector(database, sql, make_window, qtbot):
    window = make_window(database)
    me_file_id, band_id = sql.execute(
        "select me_file_id, target_band_id from target_populations order by id limit 1"
    ).fetchone()
    qtbot.keyClick(window, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    field = window.search_field
    assert field.edit.hasFocus() or QApplication.focusWidget() is field.edit
    field.edit.setText(str(me_file_id))
    with qtbot.waitSignal(window.inspector.reportLoaded, timeout=30_000):
        qtbot.keyClick(field.edit, Qt.Key.Key_Return)
    assert window.inspector.me_file_id == me_file_id
    qtbot.waitUntil(window.inspector_dock.isVisible)
    memberships = {m.band_id for m in window.inspector.report.memberships}
    assert band_id in memberships


def test_band_population_view_double_click_inspects_that_row(database, sql, make_window, qtbot):
    window = make_window(database)
    select_target(window, qtbot, 1)
    band_id = window.bands_model.bands()[0].id
    select_band(window, band_id)
    assert window.act_population.isEnabled()
    window.act_population.trigger()
    views = [w for w in QApplication.topLevelWidgets() if isinstance(w, BandPopulationView)]
    assert len(views) == 1
    view = views[0]
    qtbot.waitUntil(lambda: view.model.rowCount() > 0, timeout=30_000)
    first = sql.execute(
        "select me_file_id from target_populations where target_band_id = %s order by id limit 1",
        (band_id,),
    ).fetchone()[0]
    with qtbot.waitSignal(window.inspector.reportLoaded, timeout=30_000):
        view.activate_row(0)
    assert window.inspector.me_file_id == first
    assert window.inspector.current_membership().band_id == band_id
    view.close()


def test_tools_backfill_opens_the_wizard_on_the_window_controller(database, make_window, qtbot):
    window = make_window(database)
    assert window.act_backfill.isEnabled()
    window.act_backfill.trigger()
    wizards = [w for w in window.findChildren(BackfillWizard)]
    assert len(wizards) == 1
    wizard = wizards[0]
    assert wizard.currentId() == Page.SCOPE
    assert wizard.controller is window.controller
    wizard.close()
