"""The fast counts (from indexes) agree with plain counts; the per-shape counts come apart."""

from __future__ import annotations

from sqlalchemy import text

from qsnap_gui.engine import views
from qsnap_gui.engine.targets import list_targets
from qsnap_gui.store.queries import band_counts, band_shape_counts, list_bands, with_shapes
from qsnap_gui.tools.bench import (
    BENCH_TARGET,
    ScaleFigures,
    StrategyFigures,
    render,
    views_during_job,
)

PLAIN_BANDS = """
    select tp.target_band_id,
           count(*) filter (where tp.me_file_id is not null),
           count(*) filter (where tp.me_file_id is not null and tp.matching_tags_snapshot is null),
           count(*) filter (where f.id is null)
    from target_populations tp left join me_files f on f.id = tp.me_file_id
    group by 1
"""


def _odd_rows(conn) -> tuple[int, int]:
    """Rows of every kind a count may trip on, in two bands of target 1; their ids."""
    bands = list(
        conn.execute(
            text("select id from target_bands where target_id = 1 order by id limit 2")
        ).scalars()
    )
    gone = conn.execute(text("select max(id) + 1000 from me_files")).scalar_one()
    conn.execute(
        text(
            "insert into target_populations (target_band_id, me_file_id, matching_tags_snapshot) "
            "values (:a, null, null), (:a, :gone, null), (:a, :gone2, '{\"tags\": []}'), "
            "(:b, null, '{}'), (:b, :gone, 'null'::jsonb)"
        ),
        {"a": bands[0], "b": bands[1], "gone": gone, "gone2": gone + 1},
    )
    conn.execute(
        text(
            "update target_populations set matching_tags_snapshot = 'null'::jsonb "
            "where id in (select id from target_populations where target_band_id = :b "
            "and me_file_id is not null order by id limit 3)"
        ),
        {"b": bands[0]},
    )
    conn.execute(
        text(
            "update target_populations set matching_tags_snapshot = null "
            "where id in (select id from target_populations where target_band_id = :b "
            "and me_file_id is not null order by id desc limit 7)"
        ),
        {"b": bands[1]},
    )
    return bands[0], bands[1]


def test_fast_band_counts_equal_plain_counts_and_leave_the_shapes_out(fresh_db):
    with fresh_db.engine.begin() as conn:
        _odd_rows(conn)
    with fresh_db.engine.connect() as conn:
        plain = {r[0]: tuple(r[1:]) for r in conn.execute(text(PLAIN_BANDS))}
        fast = list_bands(conn, 1, shapes=False)
        full = list_bands(conn, 1)
        counts = band_counts(conn, [b.id for b in fast])
    assert fast and all(not b.shapes_known for b in fast)
    assert {b.id: (b.population, b.missing) for b in fast} == {
        b.id: plain.get(b.id, (0, 0, 0))[:2] for b in fast
    }
    assert {b: (c.population, c.missing) for b, c in counts.items()} == {
        b: plain[b][:2] for b in counts
    }
    assert any(b.missing for b in fast)
    assert [(b.id, b.population, b.missing) for b in full] == [
        (b.id, b.population, b.missing) for b in fast
    ]
    assert {b.id: b.orphans for b in full} == {b.id: plain.get(b.id, (0, 0, 0))[2] for b in full}
    assert any(b.orphans for b in full)
    assert all(b.shapes_known and sum(b.shapes.values()) == b.population for b in full)
    assert [b.notes for b in full] == [b.notes for b in fast]


def test_shape_counts_filled_later_equal_the_full_listing(fresh_db):
    with fresh_db.engine.begin() as conn:
        _odd_rows(conn)
    full = views.list_bands(fresh_db, 1)
    fast = views.list_bands(fresh_db, 1, shapes=False)
    slow = views.band_shape_counts(fresh_db, [b.id for b in fast])
    assert [with_shapes(b, slow[b.id]) for b in fast] == full
    assert sum(b.shapes["invalid"] for b in full) >= 4  # 'null'::jsonb rows with a me_file id
    assert sum(c.broken for c in slow.values()) >= 4


def test_shape_counts_of_a_band_without_rows_are_zero(fresh_db):
    with fresh_db.engine.begin() as conn:
        band = conn.execute(
            text(
                "insert into target_bands (target_id, title, is_bullseye, created_at, updated_at) "
                "values (1, 'empty', '0', now(), now()) returning id"
            )
        ).scalar_one()
    with fresh_db.engine.connect() as conn:
        counts = band_shape_counts(conn, [band])[band]
        assert band_counts(conn, [band]) == {}
        row = next(b for b in list_bands(conn, 1, shapes=False) if b.id == band)
    assert counts.broken == 0 and set(counts.shapes.values()) == {0}
    assert (row.population, row.missing) == (0, 0) and counts.orphans == 0


def test_targets_list_counts_equal_plain_counts(fresh_db):
    with fresh_db.engine.begin() as conn:
        _odd_rows(conn)
    with fresh_db.engine.connect() as conn:
        plain = {
            r[0]: tuple(r[1:])
            for r in conn.execute(
                text(
                    "select t.id, "
                    "count(tp.id) filter (where tp.me_file_id is not null), "
                    "count(tp.id) filter (where tp.me_file_id is not null "
                    "and tp.matching_tags_snapshot is null), "
                    "count(tp.id) filter (where f.id is null) "
                    "from targets t left join target_bands b on b.target_id = t.id "
                    "left join target_populations tp on tp.target_band_id = b.id "
                    "left join me_files f on f.id = tp.me_file_id group by t.id"
                )
            )
        }
        rows = list_targets(conn, orphans=True)
        quick = list_targets(conn)
    assert {t.id: (t.population, t.missing, t.orphans) for t in rows} == plain
    assert {t.id: (t.population, t.missing, t.orphans) for t in quick} == {
        t: (p, m, None) for t, (p, m, _o) in plain.items()
    }
    first = next(t for t in rows if t.id == 1)
    assert first.missing and first.orphans
    assert first.coverage == (first.population - first.missing) / first.population


def test_bench_times_the_views_while_a_snapshot_job_fills_the_target(fresh_db):
    engine = fresh_db.engine
    with engine.connect() as conn:
        bands = [b.id for b in list_bands(conn, BENCH_TARGET, shapes=False)]
    url = engine.url.render_as_string(hide_password=False)
    figures = views_during_job(engine, url, bands)
    timed = (
        figures.targets_seconds,
        figures.cli_targets_seconds,
        figures.bands_seconds,
        figures.shapes_seconds,
    )
    assert all(isinstance(seconds, float) for seconds in timed)
    with engine.connect() as conn:  # the job ran to the end: every snapshot filled again
        assert sum(c.missing for c in band_counts(conn, bands).values()) == 0
        assert sum(c.population for c in band_counts(conn, bands).values()) > 0
    figures_of_scale = ScaleFigures(
        100,
        100,
        None,
        {name: StrategyFigures(1.0, 100, 50.0) for name in ("baseline", "qsnap", "floor")},
        populate_seconds=1.0,
        populate_rss_mb=50.0,
        views=figures,
    )
    assert "a snapshot job: targets list" in render([figures_of_scale])
