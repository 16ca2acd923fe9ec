"""The window's counts follow a refresh as soon as it has applied its membership."""

from __future__ import annotations

from uihelp import select_target

from qsnap_gui.engine import views


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
