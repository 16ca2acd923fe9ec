"""The Refresh Population confirmation shows the refresh's preview (pytest-qt, offscreen): the
table fills in the background, a moved me_file opens in the inspector, Refresh starts the
refresh and Cancel starts nothing; an error shows in the dialog."""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import Qt
from uihelp import select_target

from qsnap_gui.engine.population import outermost_first
from qsnap_gui.engine.preview import preview_refresh
from qsnap_gui.ui.dialogs.refresh_preview import RefreshPreviewDialog
from qsnap_gui.ui.jobs import JobKind
from qsnap_gui.ui.tasks import TaskRunner
from tests.test_preview import change_tags
from tests.worlds import table_digests

WAIT_MS = 90_000


def open_preview(window, qtbot) -> RefreshPreviewDialog:
    window.act_refresh.trigger()
    dialog = window.findChild(RefreshPreviewDialog)
    assert dialog is not None and dialog.isVisible()
    # the counts come first, then the same with the stale check
    qtbot.waitUntil(lambda: dialog.preview is not None, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: dialog.preview.stale_checked, timeout=WAIT_MS)
    return dialog


def cells(dialog: RefreshPreviewDialog) -> list[list[str]]:
    t = dialog.table
    return [[t.item(r, c).text() for c in range(t.columnCount())] for r in range(t.rowCount())]


def test_confirmation_previews_then_refreshes(database, make_window, qtbot, tmp_path):
    with database.engine.begin() as conn:
        band_ids = outermost_first(conn, 1)
        change_tags(conn, band_ids)
    with database.engine.connect() as conn:
        expected = preview_refresh(conn, 1)
    window = make_window(database, confirm_refresh=True)
    select_target(window, qtbot, 1)
    before = table_digests(database.engine)

    dialog = open_preview(window, qtbot)
    assert dialog.question.text() == (
        f"This will recalculate populations for all bands of {window.current_target().title}. "
        "Continue?"
    )
    qtbot.waitUntil(lambda: dialog.table.rowCount() == 3, timeout=WAIT_MS)
    assert dialog.busy.isHidden() and not window.controller.active()
    rows = cells(dialog)
    for row, b in zip(rows, expected.bands, strict=True):
        assert row[0] == f"{b.label} ({b.band_id})"
        numbers = [b.before, b.kept, b.added, b.removed, b.moved_in, b.moved_out, b.after, b.stale]
        assert row[1:9] == [f"{n:,}" for n in numbers]
        assert row[9] == f"{b.offers_left:,}"
    assert dialog.status.text().startswith(f"{expected.kept:,} kept, {expected.added:,} added")
    assert dialog.moves.text().startswith("Moves: ") and dialog.moves.isVisible()
    assert dialog.sample.count() == len(expected.sample) > 0
    assert table_digests(database.engine) == before  # the preview wrote nothing

    path = tmp_path / "refresh-preview.png"
    assert dialog.grab().save(str(path), "PNG") and path.stat().st_size > 10_000
    keep = os.environ.get("QSNAP_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        dialog.grab().save(str(Path(keep) / "refresh-preview.png"), "PNG")

    moved = expected.sample[0].me_file_id
    item = dialog.sample.item(0)
    assert item.data(Qt.ItemDataRole.UserRole) == moved
    where = dialog.sample.visualItemRect(item).center()
    with qtbot.waitSignal(window.inspector.reportLoaded, timeout=WAIT_MS):
        # a double click is a press, a release, then the double-click event
        qtbot.mouseClick(dialog.sample.viewport(), Qt.MouseButton.LeftButton, pos=where)
        qtbot.mouseDClick(dialog.sample.viewport(), Qt.MouseButton.LeftButton, pos=where)
    assert window.inspector.me_file_id == moved

    dialog.refresh_button.click()
    qtbot.waitUntil(
        lambda: (
            [j.kind for j in window.controller.jobs()].count(JobKind.REFRESH) == 1
            and not window.controller.active()
        ),
        timeout=WAIT_MS,
    )
    with database.engine.connect() as conn:
        after = preview_refresh(conn, 1)
    assert (after.added, after.removed, after.kept) == (0, 0, expected.kept + expected.added)


def test_cancel_starts_nothing(database, make_window, qtbot):
    window = make_window(database, confirm_refresh=True)
    select_target(window, qtbot, 1)
    window.act_refresh.trigger()
    dialog = window.findChild(RefreshPreviewDialog)
    dialog.reject()  # at once, while it computes: the preview is stopped, its result ignored
    qtbot.waitUntil(
        lambda: not any(window.runner.busy(f"refresh-preview-1-{k}") for k in ("counts", "stale")),
        timeout=WAIT_MS,
    )
    assert not window.controller.jobs()


def test_an_error_shows_in_the_dialog_and_refresh_stays_possible(database, qtbot):
    runner = TaskRunner()
    dialog = RefreshPreviewDialog(database, 987_654, "(gone)", runner)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitUntil(lambda: dialog.busy.isHidden(), timeout=WAIT_MS)
    assert dialog.status.text() == "target 987654 does not exist (you may still refresh)"
    assert dialog.table.isHidden() and dialog.preview is None
    assert dialog.refresh_button.isEnabled()
    with qtbot.waitSignal(dialog.accepted, timeout=5_000):
        dialog.refresh_button.click()
    runner.wait(10_000)
