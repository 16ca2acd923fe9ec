"""The me_file inspector window parts (pytest-qt, offscreen): the snapshot tree model on every
shape, the inspector on a world built here, search and the band population view."""

from __future__ import annotations

import csv
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PySide6.QtCore import QModelIndex, Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QFileDialog, QVBoxLayout, QWidget
from sqlalchemy import text

from qsnap_gui.domain.codec import Decoded, Shape, decode
from qsnap_gui.engine.inspection import pretty_json
from qsnap_gui.store.db import TEMPORARY_PRIVILEGE, open_database
from qsnap_gui.ui.inspector import BandPopulationView, InspectorWidget, SearchField
from qsnap_gui.ui.models.snapshot_tree import (
    MAX_CHILD_NODES,
    BlankRole,
    NodeKind,
    NodeKindRole,
    SnapshotTreeModel,
    build_nodes,
)
from tests.test_inspection import ENV_1_203, T1, build_world
from tests.test_privileges import readme_grants, roles  # noqa: F401

WAIT = 90_000  # generous: a loaded 2-core CI machine parses the 10 MB value slowly

SAMPLES = {
    "missing": None,
    "envelope": ENV_1_203,
    "empty_envelope": {"tags": []},
    "bare_array": ENV_1_203["tags"],
    "legacy_flat": {
        "snapshot_at": "2024-06-01T12:00:00Z",
        "tags": [
            {"trait_id": 11, "trait_name": "Own", "parent_trait_id": 10},
            {"trait_id": 21, "trait_name": "02140", "parent_trait_id": 20},
        ],
    },
    "empty_object": {},
    "null_values": {"tags": [[20, "Home Zip Code", 1, [[21, None, 2140], [22, "", 2141]]]]},
    "invalid_string": "snapshot pending",
    "invalid_tags": {"tags": "none"},
    "invalid_child": {"tags": [[4, "Home Zip Code", 1, [[36566, 2140]]]]},
    "invalid_number": 3.5,
    "invalid_extra_key": {"tags": [], "at": 1},
}


def texts(model: SnapshotTreeModel, parent=None) -> list[str]:
    parent = parent or QModelIndex()
    out = []
    for row in range(model.rowCount(parent)):
        index = model.index(row, 0, parent)
        out.append(model.data(index))
        out.extend("  " + t for t in texts(model, index))
    return out


# --- the tree model ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SAMPLES))
def test_tree_model_every_shape(qtmodeltester, name):
    value = SAMPLES[name]
    decoded = decode(value)
    model = SnapshotTreeModel.from_decoded(decoded, None if value is None else json.dumps(value))
    qtmodeltester.check(model)
    shown = texts(model)
    if decoded.shape is Shape.MISSING:
        assert shown == ["Never snapshotted"]
    elif decoded.shape is Shape.EMPTY_OBJECT:
        assert shown[0].startswith("Empty object")
    elif decoded.shape is Shape.INVALID:
        assert shown[0] == f"Invalid snapshot: {decoded.error}"
        assert shown[1].startswith("Raw: ")
    elif not decoded.parents:
        assert shown == ["Checked: no matching tags"]
    else:
        assert len(shown) == len(decoded.parents) + sum(len(p.children) for p in decoded.parents)


def test_tree_model_columns_order_and_blank_values(qtmodeltester):
    model = SnapshotTreeModel.from_decoded(decode(SAMPLES["null_values"]))
    qtmodeltester.check(model)
    parent = model.index(0, 0)
    assert [model.data(model.index(0, c)) for c in range(3)] == ["Home Zip Code", "20", "1"]
    rows = [[model.data(model.index(r, c, parent)) for c in range(3)] for r in range(2)]
    assert rows == [["(no value)", "21", "2140"], ["(no value)", "22", "2141"]]
    assert model.data(model.index(0, 0, parent), BlankRole) is True
    assert model.data(model.index(0, 0, parent), NodeKindRole) == "child"
    assert model.data(parent, NodeKindRole) == "parent"
    envelope = SnapshotTreeModel.from_decoded(decode(ENV_1_203))
    kids = envelope.index(2, 0)
    assert envelope.data(kids) == "Home Properties"
    assert envelope.data(envelope.index(0, 0, kids)) == "Pool"
    assert envelope.data(envelope.index(0, 0, kids), BlankRole) is False
    # bad indexes never raise
    assert model.index(99, 0).isValid() is False
    assert model.index(0, 7).isValid() is False
    assert model.rowCount(model.index(0, 1)) == 0
    assert model.data(QModelIndex()) is None


def test_tree_model_huge_deep_and_reset(qtmodeltester):
    children = [[i, f"value {i}", i] for i in range(1, 400_001)]
    decoded = decode({"tags": [[40, "Pets", 3, children]]})
    root = build_nodes(decoded)
    kids = root.children[0].children
    assert len(kids) == MAX_CHILD_NODES
    assert root.children[-1].kind is NodeKind.MORE
    assert "380,000 more" in root.children[-1].text
    model = SnapshotTreeModel(root)
    qtmodeltester.check(model)
    long_value = "x" * 5_000_000
    model.set_root(build_nodes(decode({"tags": [[1, "P", 1, [[2, long_value, 1]]]]})))
    assert len(model.data(model.index(0, 0, model.index(0, 0)))) <= 300
    deep = Decoded(Shape.INVALID, error="nested too deeply to read")
    model.set_root(build_nodes(deep, "[" * 64_000))
    qtmodeltester.check(model)
    assert texts(model)[0] == "Invalid snapshot: nested too deeply to read"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=25,
)
tree_like = st.builds(
    lambda parents: {"tags": parents},
    st.lists(
        st.tuples(
            st.integers(1, 99),
            st.text(max_size=8),
            st.none() | st.integers(0, 9),
            st.lists(
                st.tuples(st.integers(1, 999), st.none() | st.text(max_size=8), st.integers(0, 9)),
                max_size=4,
            ),
        ).map(lambda p: [p[0], p[1], p[2], [list(c) for c in p[3]]]),
        max_size=4,
    ),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=json_values | tree_like)
def test_tree_model_never_raises(qtmodeltester, value):
    model = SnapshotTreeModel.from_decoded(decode(value), json.dumps(value))
    qtmodeltester.check(model)


# --- the inspector on a built world -----------------------------------------------------------


@pytest.fixture(scope="module")
def world(create_db):
    url = create_db("inspect_ui")
    build_world(url)
    database = open_database(url)
    with database.engine.begin() as conn:  # a value with quotes, commas, emoji for the CSV
        conn.execute(
            text(
                "update target_populations set matching_tags_snapshot = cast(:v as jsonb) "
                "where id = 5002"
            ),
            {"v": json.dumps({"tags": [[40, "Pets", 3, [[41, 'Dog "Rex", 🐶 boy', 1]]]]})},
        )
    yield database
    database.dispose()


@pytest.fixture
def inspector(qtbot, world):
    widget = InspectorWidget(world)
    qtbot.addWidget(widget)
    widget.resize(1200, 800)
    widget.show()
    return widget


def open_and_wait(qtbot, inspector, me_file_id, band_id=None):
    with qtbot.waitSignal(inspector.reportLoaded, timeout=WAIT):
        inspector.open_me_file(me_file_id, band_id)
    return inspector.current_membership()


def why_texts(inspector) -> list[str]:
    out = []

    def walk(item, depth):
        out.append("  " * depth + " | ".join(t for t in (item.text(c) for c in range(3)) if t))
        for i in range(item.childCount()):
            walk(item.child(i), depth + 1)

    for i in range(inspector.why.topLevelItemCount()):
        walk(inspector.why.topLevelItem(i), 0)
    return out


def test_inspector_shows_memberships_tree_and_why(qtbot, inspector):
    m = open_and_wait(qtbot, inspector, 2, band_id=202)
    assert m.band_id == 202 and m.shape == "bare_array"
    assert inspector.memberships.rowCount() == 3
    assert inspector.memberships.item(inspector.memberships.currentRow(), 1).text() == "Ring 1"
    assert inspector.shape_badge.text() == "Bare array" and inspector.shape_badge.isVisible()
    model = inspector.tree_model
    assert texts(model) == ["Home Own/Rent", "  Own", "Home Zip Code", "  02140"]
    for index in model.parent_indexes():
        assert inspector.tree.isExpanded(index)
    why = why_texts(inspector)
    assert why[0] == "In Ring 1 (band 202): satisfies 2 of 2 groups"
    assert "  ✓ Owners  (group 100)" in why
    assert "    02141 | 22 | (no value)" in why
    assert "Not in Bullseye (band 203): fails 1 of 3 groups" in why
    assert "  ✗ Pool or garage  (group 102)" in why
    assert "    Garage | 32" in why
    assert not any(
        "group 100" in line
        for line in why[why.index("Not in Bullseye (band 203): fails 1 of 3 groups") :]
    )
    raw = inspector.raw.toPlainText()
    assert raw == pretty_json(ENV_1_203["tags"][:2])
    assert inspector.raw.textInteractionFlags() & Qt.TextInteractionFlag.TextSelectableByMouse
    assert inspector.stale_badge.text() == "Stale"


def test_inspector_bullseye_and_band_without_groups(qtbot, inspector):
    open_and_wait(qtbot, inspector, 1, band_id=203)
    why = why_texts(inspector)
    assert "  This is the Bullseye, the innermost band" in why
    assert inspector.stale_badge.text() == "Up to date"
    m = open_and_wait(qtbot, inspector, 2, band_id=401)
    assert m.band_id == 401
    assert texts(inspector.tree_model) == ["Checked: no matching tags"]
    assert any("No trait groups" in line for line in why_texts(inspector))


def test_inspector_every_shape_of_the_world(qtbot, inspector):
    seen = {}
    for me_file_id in (1, 2, 3, 4):
        open_and_wait(qtbot, inspector, me_file_id)
        for row in range(inspector.memberships.rowCount()):
            inspector.memberships.selectRow(row)
            m = inspector.current_membership()
            seen[m.shape] = texts(inspector.tree_model)
            assert inspector.never_bar.isVisibleTo(inspector) == (m.shape == "missing")
    assert seen["missing"] == ["Never snapshotted"]
    assert seen["empty_object"][0].startswith("Empty object")
    assert seen["invalid"][0].startswith("Invalid snapshot: tags: must be an array")
    assert seen["invalid"][1] == 'Raw: {"tags": "none"}'
    assert seen["legacy_flat"] == ["Home Own/Rent  (name not stored)", "  Own"]
    assert set(seen) >= {
        "missing",
        "envelope",
        "bare_array",
        "legacy_flat",
        "empty_object",
        "invalid",
    }


def test_never_snapshotted_row_can_be_snapshotted_now(qtbot, inspector):
    m = open_and_wait(qtbot, inspector, 2, band_id=301)
    assert m.shape == "missing" and m.population_id == 5004
    assert inspector.never_bar.isVisible() and inspector.snapshot_now_button.isEnabled()
    with (
        qtbot.waitSignal(inspector.snapshotWritten, timeout=WAIT) as written,
        qtbot.waitSignal(inspector.reportLoaded, timeout=WAIT),
    ):
        qtbot.mouseClick(inspector.snapshot_now_button, Qt.MouseButton.LeftButton)
    assert written.args == [5004]
    m = inspector.current_membership()
    assert m.population_id == 5004 and m.shape == "envelope"
    assert not inspector.never_bar.isVisible()
    assert texts(inspector.tree_model) == ["Pets", "  Cat"]


def test_stale_panel_and_resnapshot_clears_it(qtbot, inspector, world):
    with world.engine.begin() as conn:
        conn.execute(text("delete from me_file_tags where id = 1063"))
        conn.execute(
            text(
                "insert into me_file_tags (id, me_file_id, trait_id, tag_value, added_date,"
                " modified_date, added_by, modified_by)"
                " values (1064, 6, 32, 'Garage', :a, :a, 1, 1)"
            ),
            {"a": T1},
        )
    m = open_and_wait(qtbot, inspector, 6)
    assert m.population_id == 5008
    assert inspector.stale_badge.text() == "Stale"
    rows = [
        [inspector.stale_list.topLevelItem(i).text(c) for c in range(4)]
        for i in range(inspector.stale_list.topLevelItemCount())
    ]
    assert rows == [
        ["+ added", "Home Properties (30)", "32", "Garage"],
        ["− removed", "Home Properties (30)", "31", "Pool"],
    ]
    assert inspector.resnapshot_button.isEnabled()
    with qtbot.waitSignal(inspector.reportLoaded, timeout=WAIT):
        qtbot.mouseClick(inspector.resnapshot_button, Qt.MouseButton.LeftButton)
    assert inspector.current_membership().population_id == 5008
    assert inspector.current_membership().stale.up_to_date
    assert inspector.stale_badge.text() == "Up to date"
    assert "Garage" in texts(inspector.tree_model)[-1]


def test_copy_json_and_save_csv(qtbot, inspector, tmp_path, monkeypatch):
    m = open_and_wait(qtbot, inspector, 1, band_id=301)
    assert m.population_id == 5002
    inspector.copy_json()
    copied = QGuiApplication.clipboard().text()
    assert json.loads(copied) == {"tags": [[40, "Pets", 3, [[41, 'Dog "Rex", 🐶 boy', 1]]]]}
    target = tmp_path / "tree 🐶.csv"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), "CSV"))
    qtbot.mouseClick(inspector.csv_button, Qt.MouseButton.LeftButton)
    with open(target, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [
        [
            "parent_trait_id",
            "parent_name",
            "parent_display_order",
            "trait_id",
            "tag_value",
            "display_order",
            "no_value",
        ],
        ["40", "Pets", "3", "41", 'Dog "Rex", 🐶 boy', "1", ""],
    ]
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: ("", ""))
    assert inspector.save_tree_csv() is None


def test_unknown_me_file_reports_an_error(qtbot, inspector):
    with qtbot.waitSignal(inspector.loadFailed, timeout=WAIT) as failed:
        inspector.open_me_file(4242)
    assert failed.args == ["me_file 4242 does not exist"]
    assert "me_file 4242 does not exist" in inspector.status.text()


# --- search -----------------------------------------------------------------------------------


@pytest.fixture
def searching(qtbot, world, inspector):
    host = QWidget()
    layout = QVBoxLayout(host)
    field = inspector.search_field(host)
    layout.addWidget(field)
    host.addAction(field.focus_action)
    qtbot.addWidget(host)
    host.show()
    qtbot.waitExposed(host)
    return host, field


def test_search_by_id_opens_the_me_file(qtbot, searching, inspector):
    _host, field = searching
    with qtbot.waitSignal(inspector.reportLoaded, timeout=WAIT):
        qtbot.keyClicks(field.edit, "3")
        qtbot.keyClick(field.edit, Qt.Key.Key_Return)
    assert inspector.report.me_file_id == 3
    assert inspector.title.text() == "me_file 3 · Zoë 🐱 Émile"


@pytest.mark.parametrize(
    ("query", "expected"),
    [('bob "100%', 2), ("ZOË 🐱", 3), ("50%_off\\", 5), ("alice o'", 1)],
)
def test_search_single_prefix_hit_opens_it(qtbot, searching, inspector, query, expected):
    _host, field = searching
    with qtbot.waitSignal(inspector.reportLoaded, timeout=WAIT):
        field.search(query)
    assert inspector.report.me_file_id == expected


def test_search_prefix_lists_pages_and_opens_the_choice(qtbot, searching, inspector):
    _host, field = searching
    field.page_size = 1
    with qtbot.waitSignal(field.resultsShown, timeout=WAIT) as shown:
        qtbot.keyClicks(field.edit, "ALI")
        qtbot.keyClick(field.edit, Qt.Key.Key_Return)
    assert shown.args == [1]
    assert field.popup.isVisible()
    assert field.results.count() == 2 and field.results.item(1).text() == "More results…"
    with qtbot.waitSignal(field.resultsShown, timeout=WAIT) as shown:
        field.activate_row(1)
    assert shown.args == [2] and field.results.count() == 2
    ids = [field.results.item(i).data(Qt.ItemDataRole.UserRole) for i in range(2)]
    assert sorted(ids) == [1, 4]
    row = ids.index(4)
    rect = field.results.visualItemRect(field.results.item(row))
    with qtbot.waitSignal(inspector.reportLoaded, timeout=WAIT):
        qtbot.mouseClick(field.results.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert inspector.report.me_file_id == 4
    assert not field.popup.isVisible()


def test_search_wildcards_are_literal(qtbot, searching):
    _host, field = searching
    for query in ("%", "_", "\\"):
        with qtbot.waitSignal(field.resultsShown, timeout=WAIT) as shown:
            field.search(query)
        assert shown.args == [0] and not field.popup.isVisible()
        assert field.edit.toolTip() == f"No me_file matches {query!r}"


def test_search_shortcut_focuses_the_field(qtbot, searching):
    host, field = searching
    assert field.focus_action.shortcut().toString() == "Ctrl+F"
    field.edit.setText("something")
    host.activateWindow()
    field.focus_action.trigger()
    qtbot.waitUntil(lambda: field.edit.hasFocus() or not host.isActiveWindow(), timeout=WAIT)
    assert field.edit.selectedText() == "something"


# --- the band population view -----------------------------------------------------------------


def test_population_view_pages_filters_and_opens(qtbot, db):
    with db.engine.connect() as conn:
        band_id, rows = conn.execute(
            text(
                "select target_band_id, count(*) from target_populations "
                "group by 1 order by 2 desc limit 1"
            )
        ).one()
    assert rows > 60
    inspector = InspectorWidget(db)
    qtbot.addWidget(inspector)
    view = inspector.population_view(band_id, page_size=30)
    qtbot.addWidget(view)
    with qtbot.waitSignal(view.pageLoaded, timeout=WAIT):
        view.resize(900, 600)
        view.show()
    assert len(view.model.rows) == 30 and view.more_button.isEnabled()
    ids = [r.population_id for r in view.model.rows]
    assert ids == sorted(ids)
    with qtbot.waitSignal(view.pageLoaded, timeout=WAIT) as loaded:
        qtbot.mouseClick(view.more_button, Qt.MouseButton.LeftButton)
    assert loaded.args == [60]
    ids = [r.population_id for r in view.model.rows]
    assert ids == sorted(set(ids))

    with qtbot.waitSignal(view.pageLoaded, timeout=WAIT):
        view.set_shape("missing")
    assert view.model.rows and all(r.shape == "missing" for r in view.model.rows)
    assert view.shape_filter.currentText() == "Missing"

    row = min(3, len(view.model.rows) - 1)
    target = view.model.rows[row]
    rect = view.table.visualRect(view.model.index(row, 2))
    # a real double-click starts with a press-release: QTest's mouseDClick alone skips it
    qtbot.mouseClick(view.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    with (
        qtbot.waitSignal(view.meFileActivated, timeout=WAIT) as activated,
        qtbot.waitSignal(inspector.reportLoaded, timeout=WAIT),
    ):
        qtbot.mouseDClick(view.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert activated.args == [target.me_file_id]
    assert inspector.report.me_file_id == target.me_file_id
    current = inspector.current_membership()
    assert current.band_id == band_id and current.population_id == target.population_id


def test_population_view_standalone_signal(qtbot, world):
    view = BandPopulationView(world, 203, shape="envelope")
    qtbot.addWidget(view)
    with qtbot.waitSignal(view.pageLoaded, timeout=WAIT):
        pass
    assert view.shape_filter.currentText() == "Envelope"
    assert all(r.shape == "envelope" for r in view.model.rows)
    assert view.model.rows[0].me_file_id == 1
    with qtbot.waitSignal(view.meFileActivated, timeout=WAIT) as activated:
        view.activate_row(0)
    assert activated.args == [1]


def test_search_field_standalone(qtbot, world):
    field = SearchField(world)
    qtbot.addWidget(field)
    with qtbot.waitSignal(field.meFileActivated, timeout=WAIT) as activated:
        field.search("7")
    assert activated.args == [7]


def test_inspector_survives_deep_and_huge_values(qtbot, inspector, world):
    """Runs last on the shared world: it rewrites two of its snapshots."""
    with world.engine.begin() as conn:
        conn.execute(
            text(
                "update target_populations set matching_tags_snapshot = "
                "cast(repeat('[', 10000) || repeat(']', 10000) as jsonb) where id = 5002"
            )
        )
        conn.execute(
            text(
                """
                update target_populations set matching_tags_snapshot = jsonb_build_object(
                    'tags', jsonb_build_array(jsonb_build_array(40, 'Pets', 3,
                        (select jsonb_agg(jsonb_build_array(i, 'value number ' || i, i)
                                          order by i)
                         from generate_series(1, 400000) i))))
                where id = 5005
                """
            )
        )
    m = open_and_wait(qtbot, inspector, 1, band_id=301)
    assert m.shape == "invalid" and inspector.shape_badge.text() == "Invalid"
    assert texts(inspector.tree_model)[0].startswith("Invalid snapshot: nested too deeply")
    assert inspector.raw.toPlainText().startswith("[[[[")

    m = open_and_wait(qtbot, inspector, 2, band_id=401)
    assert m.shape == "envelope" and len(m.tags[0][3]) == 400_000
    shown = texts(inspector.tree_model)
    assert len(shown) == 1 + MAX_CHILD_NODES + 1 and "more tags not shown" in shown[-1]
    raw = inspector.raw.toPlainText()
    assert raw.endswith("Copy JSON copies all of it") and len(raw) < 1_100_000
    assert inspector.stale_badge.text() == "Stale"
    assert inspector.stale_list.topLevelItemCount() == 201  # 200 shown, then "… more"


def test_a_role_without_temporary_resnapshots_one_row(qtbot, fresh_db, roles):  # noqa: F811
    """One row is rewritten by one UPDATE: no temp table, so TEMPORARY is not asked for."""
    grants = readme_grants("{role}", fresh_db.url.database)
    url = roles(*[g.replace("CONNECT, TEMPORARY ON", "CONNECT ON") for g in grants])
    with fresh_db.engine.begin() as conn:
        population_id, me_file_id, band_id = conn.execute(
            text(
                "update target_populations set matching_tags_snapshot = null where id = "
                "(select min(id) from target_populations) returning id, me_file_id, target_band_id"
            )
        ).one()
    as_role = open_database(url)
    try:
        assert TEMPORARY_PRIVILEGE not in as_role.privileges
        widget = InspectorWidget(as_role)
        qtbot.addWidget(widget)
        widget.show()
        m = open_and_wait(qtbot, widget, me_file_id, band_id)
        assert m.population_id == population_id and m.shape == "missing"
        assert widget.snapshot_now_button.isEnabled()
        with (
            qtbot.waitSignal(widget.snapshotWritten, timeout=WAIT),
            qtbot.waitSignal(widget.reportLoaded, timeout=WAIT),
        ):
            qtbot.mouseClick(widget.snapshot_now_button, Qt.MouseButton.LeftButton)
        assert widget.current_membership().shape == "envelope"
    finally:
        as_role.dispose()
    with fresh_db.engine.connect() as conn:
        assert conn.execute(
            text("select matching_tags_snapshot is not null from target_populations where id = :p"),
            {"p": population_id},
        ).scalar()
