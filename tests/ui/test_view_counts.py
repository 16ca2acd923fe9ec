"""The window's counts: a refresh's bands counted again once its membership is applied; the
targets list's coverage a moment after its populations; thousands of targets sorted and
filtered in the model."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QTableView
from uihelp import select_target, target_cell

from qsnap_gui.engine import views
from qsnap_gui.engine.targets import TargetRow
from qsnap_gui.ui.models import TargetsModel, TargetsProxy
from qsnap_gui.ui.models.base import COVERAGE_ROLE, ID_ROLE
from qsnap_gui.ui.models.targets import COUNTING


def shapes_of(database, target_id: int) -> dict[int, dict[str, int]]:
    return {b.id: b.shapes for b in views.list_bands(database, target_id)}


def model_shapes(window) -> dict[int, dict[str, int]]:
    return {b.id: b.shapes for b in window.bands_model.bands()}


def test_a_refresh_drops_its_bands_shape_counts_when_its_membership_is_applied(
    database, sql, make_window, qtbot, qtmodeltester
):
    window = make_window(database)
    select_target(window, qtbot, 1)
    qtbot.waitUntil(lambda: model_shapes(window) == shapes_of(database, 1), timeout=30_000)
    bands = [b.id for b in window.bands_model.bands()]
    assert bands and all(window.shape_counts.known(b) for b in bands)
    # rows of me_files outside the target: the membership step deletes them
    sql.execute(
        "insert into target_populations (target_band_id, me_file_id, matching_tags_snapshot) "
        "select %s, f.id, '{\"tags\": []}' from me_files f where not exists "
        "(select 1 from target_populations p join target_bands b on b.id = p.target_band_id "
        " where b.target_id = 1 and p.me_file_id = f.id) order by f.id limit 5",
        (bands[0],),
    )

    window.act_refresh.trigger()
    refresh = window.controller.jobs()[-1]
    assert refresh.target_id == 1 and refresh.band_id is None
    seen: list[tuple[bool, bool]] = []

    def at_membership(target_id: int) -> None:
        """Connected after the cache: runs once it heard, before the refresh's later events."""
        still_known = any(window.shape_counts.known(b) for b in bands)
        seen.append((still_known, window.controller.job(refresh.id).active))

    window.controller.membershipApplied.connect(at_membership)
    with qtbot.waitSignal(window.loaded, timeout=60_000):  # the reload the membership asks for
        qtbot.waitUntil(lambda: bool(seen), timeout=60_000)
    assert seen == [(False, True)], "the cached counts outlived the membership step"
    after = {b.id: b.population for b in views.list_bands(database, 1, shapes=False)}
    assert {b.id: b.population for b in window.bands_model.bands()} == after

    qtbot.waitUntil(lambda: not window.controller.job(refresh.id).active, timeout=60_000)
    qtbot.waitUntil(lambda: model_shapes(window) == shapes_of(database, 1), timeout=30_000)
    qtmodeltester.check(window.bands_model)
    qtmodeltester.check(window.targets_proxy)


# --- the targets list: coverage a moment after the populations; sorting and filtering --------


def many_rows(n: int) -> list[TargetRow]:
    when = datetime(2026, 1, 1)
    return [
        TargetRow(
            i,
            None if i % 11 == 0 else f"Audience {i % 37} #{i}",
            "populating" if i % 7 == 0 else "populated",
            None if i % 5 == 0 else when + timedelta(hours=i % 23),
            (i * 7919) % 400,
            None,
            stuck=i % 14 == 0,
        )
        for i in range(1, n + 1)
    ]


def proxy_ids(proxy: TargetsProxy) -> list[int]:
    return [proxy.index(r, 0).data(ID_ROLE) for r in range(proxy.rowCount())]


def test_targets_show_counting_until_their_missing_arrive(qtmodeltester, qtbot):
    model = TargetsModel()
    rows = many_rows(300)
    with qtbot.waitSignal(model.coverageWanted, timeout=1000):
        model.set_rows(rows)
    qtmodeltester.check(model)
    cell = model.index(model.row_of(3), TargetsModel.COVERAGE)
    assert model.counting() and cell.data() == COUNTING and cell.data(COVERAGE_ROLE) is None
    missing = {t.id: t.population // 4 for t in rows if t.id % 3}
    model.set_missing(missing)
    qtmodeltester.check(model)
    assert not model.counting()
    for t in rows:
        shown = model.target(t.id)
        assert shown.missing == missing.get(t.id, 0)
        if t.population:
            expected = (t.population - missing.get(t.id, 0)) / t.population
            cell = model.index(model.row_of(t.id), TargetsModel.COVERAGE)
            assert cell.data(COVERAGE_ROLE) == expected


def test_targets_sort_and_filter_by_the_models_own_keys(qtmodeltester):
    model = TargetsModel()
    proxy = TargetsProxy()
    proxy.setSourceModel(model)
    rows = many_rows(300)
    model.set_rows(rows)
    model.set_missing({t.id: t.population // 3 for t in rows})
    qtmodeltester.check(proxy)
    shown = {t.id: model.target(t.id) for t in rows}

    proxy.sort(TargetsModel.POPULATION, Qt.SortOrder.DescendingOrder)
    by_population = sorted(rows, key=lambda t: -t.population)  # stable: ties by id
    assert proxy_ids(proxy) == [t.id for t in by_population]
    proxy.sort(TargetsModel.TITLE)
    assert proxy_ids(proxy) == [
        t.id for t in sorted(rows, key=lambda t: t.display_title.casefold())
    ]
    proxy.sort(TargetsModel.COVERAGE, Qt.SortOrder.DescendingOrder)
    coverage = [shown[i].coverage if shown[i].population else -1.0 for i in proxy_ids(proxy)]
    assert coverage == sorted(coverage, reverse=True)

    proxy.set_filter_text("UNTITLED")
    assert sorted(proxy_ids(proxy)) == [t.id for t in rows if t.title is None]
    proxy.set_filter_text("stuck")
    assert sorted(proxy_ids(proxy)) == [t.id for t in rows if t.stuck]
    proxy.set_filter_text("#12")
    assert sorted(proxy_ids(proxy)) == [t.id for t in rows if "#12" in t.display_title]
    qtmodeltester.check(proxy)
    proxy.set_filter_text("")
    assert len(proxy_ids(proxy)) == 300


def test_a_sort_or_new_counts_keep_the_selected_target(qtbot):
    model = TargetsModel()
    proxy = TargetsProxy()
    proxy.setSourceModel(model)
    view = QTableView()
    qtbot.addWidget(view)
    view.setModel(proxy)
    view.setSortingEnabled(True)
    rows = many_rows(300)
    model.set_rows(rows)
    view.selectRow(proxy.mapFromSource(model.index(model.row_of(123), 0)).row())

    def selected() -> int:
        return view.selectionModel().selectedRows()[0].data(ID_ROLE)

    assert selected() == 123
    view.sortByColumn(TargetsModel.POPULATION, Qt.SortOrder.AscendingOrder)
    assert selected() == 123
    model.set_missing({t.id: 1 for t in rows})
    view.sortByColumn(TargetsModel.COVERAGE, Qt.SortOrder.DescendingOrder)
    assert selected() == 123
    model.set_rows([replace(t, population=t.population + 1, missing=0) for t in rows])
    assert selected() == 123


def test_the_window_shows_coverage_from_a_second_read(database, sql, make_window, qtbot):
    sql.execute(
        "update target_populations set matching_tags_snapshot = null where id in "
        "(select p.id from target_populations p join target_bands b on b.id = p.target_band_id "
        " where b.target_id = 1 and p.me_file_id is not null order by p.id limit 9)"
    )
    window = make_window(database)
    expected = {t.id: t.missing for t in views.list_targets(database, coverage=True)}
    assert expected[1] >= 9
    qtbot.waitUntil(lambda: not window.targets_model.counting(), timeout=30_000)
    assert {t.id: t.missing for t in window.targets_model.rows()} == expected
    first = window.targets_model.target(1)
    assert target_cell(window, 1, TargetsModel.COVERAGE) != COUNTING
    assert first.coverage == (first.population - expected[1]) / first.population
    select_target(window, qtbot, 1)
    window.update_header()
    assert "coverage" in window.target_summary.text()
    assert COUNTING not in window.target_summary.text()
