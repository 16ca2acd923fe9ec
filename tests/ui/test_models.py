"""Every item model of the window passes pytest-qt's model tester, loaded and while jobs change it."""

from __future__ import annotations

import pytest
from pytestqt.modeltest import ModelTester
from uihelp import select_band, select_target

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
