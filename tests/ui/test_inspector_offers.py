"""The inspector's "Offers & ad events" section (pytest-qt, offscreen): rows of every snapshot
shape with their tree and comparison line, paging past 200, absent without the tables."""

from __future__ import annotations

import csv
import json

import pytest
from PySide6.QtCore import QModelIndex
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication
from sqlalchemy import text
from test_layout import cut_titles, styled  # noqa: F401 (styled: a fixture used below)

from qsnap_gui.domain.codec import Shape
from qsnap_gui.engine.offers_view import AD_EVENTS, OFFERS, PAGE, Verdict
from qsnap_gui.store.db import open_database
from qsnap_gui.ui.inspector import InspectorWidget
from qsnap_gui.ui.inspector.widget import OFFERS_SECTION
from qsnap_gui.ui.models.offers import OffersModel, verdict_info
from qsnap_gui.ui.window import MainWindow
from tests.test_offers_view import EVENT_CASES, OFFER_CASES, POP_202, j, load, world

WAIT = 60_000


def make_db(create_db, name: str, w=None, drop: str | None = None):
    url = create_db(name)
    loader = open_database(url, check_schema=False)
    try:
        load(loader.engine, w or world())
        if drop:
            with loader.engine.begin() as conn:
                conn.execute(text(f"drop table {drop}"))
    finally:
        loader.dispose()
    return open_database(url)  # reads the schema and this role's privileges, as the window does


@pytest.fixture(scope="module")
def offers_db(create_db):
    database = make_db(create_db, "ui_offers")
    yield database
    database.dispose()


def open_inspector(qtbot, database, me_file_id: int) -> InspectorWidget:
    widget = InspectorWidget(database)
    qtbot.addWidget(widget)
    widget.resize(520, 760)
    widget.show()
    with qtbot.waitSignals([widget.reportLoaded, widget.offers.loaded], timeout=WAIT):
        widget.open_me_file(me_file_id)
    return widget


def tree_texts(model, parent=None) -> list[str]:
    parent = parent or QModelIndex()
    out = []
    for row in range(model.rowCount(parent)):
        index = model.index(row, 0, parent)
        out.append(model.data(index))
        out.extend("  " + t for t in tree_texts(model, index))
    return out


def test_every_shape_renders_with_its_line(qtbot, qtmodeltester, offers_db):
    inspector = open_inspector(qtbot, offers_db, 1)
    panel = inspector.offers
    assert inspector.sections.isTabVisible(OFFERS_SECTION)
    inspector.sections.setCurrentIndex(OFFERS_SECTION)
    model = panel.models[OFFERS]
    qtmodeltester.check(model)
    assert model.rowCount() == len(OFFER_CASES)
    assert panel.kinds.tabText(0) == f"Offers ({len(OFFER_CASES)})"
    assert (
        panel.count_label.text()
        == f"{len(OFFER_CASES)} of {len(OFFER_CASES)} offers shown, newest first"
    )
    assert not panel.more_button.isEnabled()
    seen = set()
    for row in range(model.rowCount()):
        panel.select(OFFERS, row)
        r = panel.current_row()
        band, _snap, verdict, line = OFFER_CASES[r.id - 1]
        assert r.comparison.verdict is verdict and line in panel.line.text()
        assert panel.verdict_badge.text() == verdict_info(verdict).label
        assert model.index(row, OffersModel.COMPARED).data() == verdict_info(verdict).label
        shown = tree_texts(panel.tree_model)
        assert shown, r.shape
        shape = Shape(r.shape)
        seen.add(shape)
        if shape is Shape.MISSING:
            assert shown == ["Never snapshotted"]
            assert panel.raw.toPlainText() == "null"
        elif shape is Shape.EMPTY_OBJECT:
            assert shown[0].startswith("Empty object")
        elif shape is Shape.INVALID:
            assert shown[0] == f"Invalid snapshot: {r.decoded.error}"
        elif shape is Shape.LEGACY_FLAT:
            assert shown[0] == "Home Own/Rent  (name not stored)"
        else:
            assert "Home Own/Rent" in shown or "Pets" in shown
        assert f"offer {r.id}" in panel.where.text()
    assert seen == set(Shape)

    panel.kinds.setCurrentIndex(1)
    assert panel.current_kind() == AD_EVENTS
    events = panel.models[AD_EVENTS]
    qtmodeltester.check(events)
    assert events.rowCount() == len(EVENT_CASES)
    panel.select(AD_EVENTS, 2)  # ids newest first: 4, 3, 2, 1
    assert panel.current_row().id == 2
    assert panel.line.text() == "the ad event names no band: no population to compare with"
    assert model.index(0, OffersModel.BAND).data() == "Bullseye"


def test_reload_keeps_the_chosen_row(qtbot, offers_db):
    inspector = open_inspector(qtbot, offers_db, 1)
    panel = inspector.offers
    panel.select(OFFERS, 3)
    chosen = panel.current_row().id
    with qtbot.waitSignals([inspector.reportLoaded, panel.loaded], timeout=WAIT):
        inspector.refresh()
    assert panel.current_row().id == chosen


def test_paging_beyond_200(qtbot, create_db):
    w = world()
    w.offers = [(3, 202, j(POP_202))] * (PAGE + 5)
    w.ad_events = []
    database = make_db(create_db, "ui_offers_many", w)
    try:
        inspector = open_inspector(qtbot, database, 3)
        panel = inspector.offers
        model = panel.models[OFFERS]
        assert model.rowCount() == PAGE
        assert panel.count_label.text() == "200 of 205 offers shown, newest first"
        assert panel.more_button.isEnabled()
        panel.more_button.click()
        qtbot.waitUntil(lambda: model.rowCount() == PAGE + 5, timeout=WAIT)
        assert [r.id for r in model.rows[-5:]] == [5, 4, 3, 2, 1]
        qtbot.waitUntil(lambda: not panel.more_button.isEnabled(), timeout=WAIT)
        assert panel.count_label.text() == "205 of 205 offers shown, newest first"
        panel.kinds.setCurrentIndex(1)
        assert panel.count_label.text() == "No ad events for this me_file"
    finally:
        panel.runner.wait(10_000)
        inspector.runner.wait(10_000)
        database.dispose()


@pytest.mark.parametrize("drop", ["offers, ad_events", "ad_events"])
def test_section_absent_without_the_tables(qtbot, create_db, drop):
    database = make_db(create_db, "ui_offers_absent", drop=drop)
    try:
        inspector = open_inspector(qtbot, database, 1)
        both_gone = drop == "offers, ad_events"
        assert inspector.sections.isTabVisible(OFFERS_SECTION) is not both_gone
        assert inspector.memberships.rowCount() == 3
        if not both_gone:
            panel = inspector.offers
            assert panel.kinds.isTabVisible(0) and not panel.kinds.isTabVisible(1)
            assert panel.models[OFFERS].rowCount() == len(OFFER_CASES)
    finally:
        inspector.runner.wait(10_000)
        inspector.offers.runner.wait(10_000)
        database.dispose()


def test_copy_json_and_csv_act_on_the_chosen_offer(qtbot, offers_db, tmp_path):
    inspector = open_inspector(qtbot, offers_db, 1)
    panel = inspector.offers
    inspector.sections.setCurrentIndex(OFFERS_SECTION)
    row = next(i for i, r in enumerate(panel.models[OFFERS].rows) if r.id == 2)
    panel.select(OFFERS, row)
    assert inspector.copy_button.isEnabled() and inspector.csv_button.isEnabled()
    inspector.copy_json()
    assert json.loads(QGuiApplication.clipboard().text()) == json.loads(OFFER_CASES[1][1])
    path = inspector.save_tree_csv(str(tmp_path / "offer.csv"))
    with open(path, encoding="utf-8", newline="") as f:
        assert len(list(csv.reader(f))) == 1 + 2  # a header and the offer's two tags
    missing = next(i for i, r in enumerate(panel.models[OFFERS].rows) if r.id == 4)
    panel.select(OFFERS, missing)
    assert inspector.copy_button.isEnabled() and not inspector.csv_button.isEnabled()
    inspector.copy_json()
    assert QGuiApplication.clipboard().text() == "null"
    inspector.sections.setCurrentIndex(0)  # the membership's snapshot again
    inspector.copy_json()
    assert json.loads(QGuiApplication.clipboard().text()) == inspector.current_membership().raw


def test_resnapshot_fills_offers_left_null_and_the_tab_reads_them_again(qtbot, create_db):
    database = make_db(create_db, "ui_offers_resnapshot")
    try:
        inspector = open_inspector(qtbot, database, 1)
        panel = inspector.offers

        def verdict(kind, row_id):
            return next(r for r in panel.models[kind].rows if r.id == row_id).comparison.verdict

        assert verdict(OFFERS, 4) is Verdict.SNAPSHOT_MISSING
        assert verdict(AD_EVENTS, 3) is Verdict.SNAPSHOT_MISSING
        row = next(i for i, m in enumerate(inspector.report.memberships) if m.band_id == 202)
        inspector.memberships.selectRow(row)
        with qtbot.waitSignals([inspector.reportLoaded, panel.loaded], timeout=WAIT):
            inspector.resnapshot_current()
        assert verdict(OFFERS, 4) is Verdict.SAME  # carried in the same transaction
        assert verdict(AD_EVENTS, 3) is Verdict.SAME
        assert verdict(OFFERS, 2) is Verdict.CHANGED  # a filled offer keeps what it was made from
    finally:
        inspector.runner.wait(10_000)
        panel.runner.wait(10_000)
        database.dispose()


def test_double_click_shows_the_membership_of_the_band(qtbot, offers_db):
    inspector = open_inspector(qtbot, offers_db, 1)
    panel = inspector.offers
    inspector.sections.setCurrentIndex(OFFERS_SECTION)
    rows = panel.models[OFFERS].rows
    panel.tables[OFFERS].doubleClicked.emit(
        panel.models[OFFERS].index(next(i for i, r in enumerate(rows) if r.id == 2), 0)
    )
    assert inspector.sections.currentIndex() == 0
    assert inspector.current_membership().band_id == 202
    inspector.sections.setCurrentIndex(OFFERS_SECTION)
    gone = next(i for i, r in enumerate(rows) if r.id == 10)
    panel.tables[OFFERS].doubleClicked.emit(panel.models[OFFERS].index(gone, 0))
    assert inspector.sections.currentIndex() == OFFERS_SECTION
    assert inspector.status.text() == "This me_file is no longer in band 999"


def test_a_failed_read_leaves_no_rows_of_before(qtbot, create_db):
    database = make_db(create_db, "ui_offers_fail")
    try:
        inspector = open_inspector(qtbot, database, 1)
        panel = inspector.offers
        assert panel.models[OFFERS].rowCount() == len(OFFER_CASES)
        with database.engine.begin() as conn:
            conn.execute(text("alter table target_bands rename to target_bands_gone"))
        with qtbot.waitSignal(panel.loadFailed, timeout=WAIT) as failed:
            inspector.refresh()
        assert "target_bands" in failed.args[0]
        assert panel.models[OFFERS].rowCount() == 0 and panel.models[AD_EVENTS].rowCount() == 0
        assert panel.status.text() == failed.args[0] and panel.line.text() == ""
    finally:
        inspector.runner.wait(10_000)
        panel.runner.wait(10_000)
        database.dispose()


@pytest.mark.usefixtures("styled")
@pytest.mark.parametrize("size", [(1280, 800), (1440, 880)])
def test_the_tab_reads_at_the_window_sizes(database, sql, qtbot, size):
    """First start at each size: every column of both tables in view, no title cut, room for
    the snapshot tree."""
    me_file = sql.execute(
        "select me_file_id from (select me_file_id from offers union all "
        "select me_file_id from ad_events) c where me_file_id is not null "
        "group by 1 order by count(*) desc, 1 limit 1"
    ).fetchone()[0]
    window = MainWindow()
    qtbot.addWidget(window)
    window.resize(*size)
    window.show()
    with qtbot.waitSignal(window.loaded, timeout=WAIT):
        window.set_database(database, owned=False)
    inspector = window.inspector
    with qtbot.waitSignals([inspector.reportLoaded, inspector.offers.loaded], timeout=WAIT):
        window.inspect(me_file)
    assert inspector.sections.isTabVisible(OFFERS_SECTION)
    inspector.sections.setCurrentIndex(OFFERS_SECTION)
    panel = inspector.offers
    for kind in (OFFERS, AD_EVENTS):
        panel.kinds.setCurrentIndex(1 if kind == AD_EVENTS else 0)
        QApplication.processEvents()
        table = panel.tables[kind]
        assert table.isVisible() and table.model().rowCount() > 0, kind
        assert cut_titles(table, table.horizontalHeader()) == [], kind
        assert not table.horizontalScrollBar().isVisible(), kind
        header = table.horizontalHeader()
        assert header.sectionSize(OffersModel.COMPARED) >= header.sectionSizeHint(
            OffersModel.COMPARED
        )
    tree = panel.tree
    assert tree.viewport().height() // max(tree.sizeHintForRow(0), 18) >= 5
    if window.controller is not None:
        assert window.controller.shutdown(30_000)
    window.close()
