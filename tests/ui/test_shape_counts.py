"""The band table shows population and missing at once and fills the shape columns later."""

from __future__ import annotations

from uihelp import band, bands_by_size, null_out, select_band, select_target

from qsnap_gui.domain.codec import SHAPES, Shape
from qsnap_gui.engine import views
from qsnap_gui.engine.views import BandRow, ShapeCounts
from qsnap_gui.ui.models import BandsModel
from qsnap_gui.ui.models.bands import COUNTING


def cell(model: BandsModel, row: int, shape: Shape) -> str:
    return model.index(row, BandsModel.FIRST_SHAPE + SHAPES.index(shape)).data()


def test_the_model_shows_missing_at_once_and_the_other_shapes_when_counted(qtmodeltester):
    model = BandsModel()
    fast = [
        BandRow(1, 7, "Bullseye", "Bullseye", True, (), population=10, missing=4),
        BandRow(2, 7, "Outer", "Ring 1", False, (), population=5, missing=0),
    ]
    model.set_bands(7, fast)
    qtmodeltester.check(model)
    assert cell(model, 0, Shape.MISSING) == "4"
    assert cell(model, 0, Shape.ENVELOPE) == COUNTING
    assert cell(model, 1, Shape.INVALID) == COUNTING

    shapes = dict.fromkeys(map(str, SHAPES), 0)
    model.set_shape_counts({1: ShapeCounts({**shapes, "missing": 4, "envelope": 6}, 0, 2)})
    qtmodeltester.check(model)
    assert cell(model, 0, Shape.ENVELOPE) == "6" and cell(model, 0, Shape.INVALID) == "0"
    assert model.bands()[0].orphans == 2 and model.bands()[0].population == 10
    assert cell(model, 1, Shape.ENVELOPE) == COUNTING


def shapes_of(database, target_id: int) -> dict[int, dict[str, int]]:
    return {b.id: b.shapes for b in views.list_bands(database, target_id)}


def model_shapes(window) -> dict[int, dict[str, int]]:
    return {b.id: b.shapes for b in window.bands_model.bands()}


def inspected_shape(window, me_file: int, band_id: int) -> str | None:
    report = window.inspector.report
    if report is None or report.me_file_id != me_file:
        return None
    return next((str(m.shape) for m in report.memberships if m.band_id == band_id), None)


def test_window_counts_shapes_once_and_again_after_its_own_job(database, sql, make_window, qtbot):
    window = make_window(database)
    select_target(window, qtbot, 1)
    qtbot.waitUntil(lambda: model_shapes(window) == shapes_of(database, 1), timeout=30_000)
    band_id = bands_by_size(sql, 1)[0]

    # another writer: the fast counts follow at once, the cached shape counts do not
    null_out(sql, [band_id])
    population = band(window, band_id).population
    before = band(window, band_id).shapes
    with qtbot.waitSignal(window.loaded, timeout=30_000):
        window.reload()
    assert band(window, band_id).missing == population > 0
    assert band(window, band_id).shapes == before
    assert not window.shape_counts.counting(1)

    me_file = sql.execute(
        "select min(me_file_id) from target_populations p join me_files f on f.id = p.me_file_id "
        "where p.target_band_id = %s",
        (band_id,),
    ).fetchone()[0]
    window.inspect(me_file)
    qtbot.waitUntil(lambda: inspected_shape(window, me_file, band_id) == "missing", timeout=30_000)

    # qsnap's own job on the band: its counts are read again when it ends, and the inspector
    # shows the row it wrote
    select_band(window, band_id)
    window.act_snap_missing.trigger()
    job_id = window.controller.jobs()[-1].id
    qtbot.waitUntil(lambda: not window.controller.job(job_id).active, timeout=60_000)
    assert window.controller.job(job_id).rows_written == population
    qtbot.waitUntil(lambda: model_shapes(window) == shapes_of(database, 1), timeout=30_000)
    assert band(window, band_id).missing == 0 == band(window, band_id).shapes["missing"]
    assert band(window, band_id).shapes != before
    qtbot.waitUntil(lambda: inspected_shape(window, me_file, band_id) != "missing", timeout=30_000)


def test_f5_counts_shapes_again_for_changes_made_by_others(database, sql, make_window, qtbot):
    window = make_window(database)
    select_target(window, qtbot, 1)
    qtbot.waitUntil(lambda: model_shapes(window) == shapes_of(database, 1), timeout=30_000)
    band_id = bands_by_size(sql, 1)[0]
    null_out(sql, [band_id])
    assert model_shapes(window) != shapes_of(database, 1)

    window.act_reload.trigger()
    qtbot.waitUntil(lambda: model_shapes(window) == shapes_of(database, 1), timeout=30_000)
    assert band(window, band_id).shapes["missing"] == band(window, band_id).population
