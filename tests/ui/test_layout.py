"""The window's first-start layout at 1280x800, as qsnap-gui draws it (Fusion and its style
sheet): the inspector on the right, no column title of its tables cut, room for "Why it
matched", a splitter that stays put after a re-snapshot, and the screenshot options."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QFont, QFontMetrics, QImage
from PySide6.QtWidgets import QAbstractItemView, QApplication, QHeaderView
from uihelp import run_gui

from qsnap_gui.ui.icons import style_sheet
from qsnap_gui.ui.inspector.layout import RAW_TAB, STALE_TAB, WHY_TAB
from qsnap_gui.ui.settings import Preferences
from qsnap_gui.ui.window import MainWindow

WAIT_MS = 90_000
HEADER_PADDING = 12  # the style sheet's "padding: 4px 6px" on each header section

NULL_VALUES = "jsonb_path_exists(matching_tags_snapshot, '$.tags[*][3][*][1] ? (@ == null)')"


@pytest.fixture
def styled(qapp):
    """The application's own look: Fusion with qsnap's style sheet (bold header titles)."""
    style, sheet = qapp.style().name(), qapp.styleSheet()
    qapp.setStyle("Fusion")
    qapp.setStyleSheet(style_sheet())
    yield
    qapp.setStyleSheet(sheet)
    qapp.setStyle(style)


def stale_me_file(sql) -> int:
    """A me_file with a stale membership (a blank value in its snapshot), most memberships
    first: every tab of the inspector has something to show."""
    return sql.execute(
        "select me_file_id from target_populations where me_file_id in ("
        f" select me_file_id from target_populations where {NULL_VALUES})"
        " group by me_file_id order by count(*) desc, me_file_id limit 1"
    ).fetchone()[0]


def cut_titles(view: QAbstractItemView, header: QHeaderView) -> list[str]:
    """The column titles narrower than their text, as the style sheet draws them."""
    font = QFont(header.font())
    font.setWeight(QFont.Weight.DemiBold)  # the style sheet's font-weight: 600
    metrics = QFontMetrics(font)
    cut = []
    for section in range(header.count()):
        if header.isSectionHidden(section):
            continue
        text = view.model().headerData(section, Qt.Orientation.Horizontal)
        needed = metrics.horizontalAdvance(text) + HEADER_PADDING
        if header.sectionSize(section) < needed:
            cut.append(f"{text!r}: {header.sectionSize(section)} px of {needed}")
    return cut


@pytest.fixture
def window_1280(database, qtbot, styled):
    """A first start (no saved layout) at 1280x800."""
    Preferences(confirm_force=False).save()
    window = MainWindow()
    qtbot.addWidget(window)
    window.resize(1280, 800)
    window.show()
    with qtbot.waitSignal(window.loaded, timeout=WAIT_MS):
        window.set_database(database, owned=False)
    yield window
    if window.controller is not None:  # pytest-qt may have closed it already
        assert window.controller.shutdown(30_000)
    window.close()


def test_first_start_shows_the_inspector_on_the_right(window_1280):
    window = window_1280
    dock = window.inspector_dock
    assert dock.isVisible()
    assert window.dockWidgetArea(dock) == Qt.DockWidgetArea.RightDockWidgetArea
    assert dock.geometry().left() > window.width() // 2
    assert dock.width() >= 440
    assert dock.height() > window.height() * 3 // 4, "the full height, beside targets and jobs"


def open_stale(window, sql, qtbot) -> int:
    """Open a me_file in the window's inspector, on a stale membership; returns its id."""
    inspector = window.inspector
    me_file = stale_me_file(sql)
    with qtbot.waitSignal(inspector.reportLoaded, timeout=WAIT_MS):
        window.inspect(me_file)
    stale_rows = [
        row
        for row, m in enumerate(inspector.report.memberships)
        if m.stale.comparable and not m.stale.up_to_date
    ]
    inspector.memberships.selectRow(stale_rows[0])
    assert inspector.stale_badge.text() == "Stale"
    QApplication.processEvents()
    return me_file


def test_the_inspector_reads_at_1280x800(window_1280, sql, qtbot):
    window = window_1280
    inspector = window.inspector
    me_file = open_stale(window, sql, qtbot)
    assert inspector.stale_list.topLevelItemCount() > 0

    tables = {
        None: (inspector.memberships, inspector.memberships.horizontalHeader()),
        0: (inspector.tree, inspector.tree.header()),
        WHY_TAB: (inspector.why, inspector.why.header()),
        STALE_TAB: (inspector.stale_list, inspector.stale_list.header()),
    }
    for tab, (view, header) in tables.items():
        if tab is not None:
            inspector.tabs.setCurrentIndex(tab)
        QApplication.processEvents()
        assert view.isVisible()
        assert cut_titles(view, header) == [], f"tab {tab}"

    inspector.tabs.setCurrentIndex(WHY_TAB)
    QApplication.processEvents()
    why = inspector.why
    rows = why.viewport().height() // max(why.sizeHintForRow(0), 1)
    assert rows >= 15, f"Why it matched shows {rows} rows"
    assert why.height() >= inspector.height() * 2 // 5
    assert not why.horizontalScrollBar().isVisible()
    assert not inspector.memberships.horizontalScrollBar().isVisible()
    assert inspector.title.text().startswith(f"me_file {me_file} · ")
    assert inspector.title.width() <= inspector.width()
    inspector.tabs.setCurrentIndex(RAW_TAB)


def test_the_splitter_stays_put_after_a_re_snapshot(window_1280, sql, qtbot):
    window = window_1280
    inspector = window.inspector
    open_stale(window, sql, qtbot)
    before = inspector.body.sizes()
    with qtbot.waitSignal(inspector.reportLoaded, timeout=WAIT_MS):
        qtbot.mouseClick(inspector.resnapshot_button, Qt.MouseButton.LeftButton)
    QApplication.processEvents()
    assert inspector.stale_badge.text() == "Up to date"
    assert inspector.body.sizes() == before


def test_screenshot_at_a_size_with_a_me_file(fresh_url, sql, tmp_path):
    out = tmp_path / "shot.png"
    me_file = stale_me_file(sql)
    done = run_gui(
        "--dsn",
        fresh_url,
        "--screenshot",
        str(out),
        "--target",
        "1",
        "--me-file",
        str(me_file),
        "--size",
        "1280x800",
        tmp_path=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    image = QImage(str(out))
    assert (image.width(), image.height()) == (1280, 800)


def test_screenshot_of_a_missing_me_file_fails_cleanly(fresh_url, tmp_path):
    out = tmp_path / "shot.png"
    done = run_gui(
        "--dsn", fresh_url, "--screenshot", str(out), "--me-file", "987654", tmp_path=tmp_path
    )
    assert done.returncode == 1
    assert "me_file 987654 does not exist" in done.stderr
    assert "Traceback" not in done.stderr and not out.exists()
