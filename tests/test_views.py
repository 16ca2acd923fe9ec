"""The fast counts (from indexes) agree with plain counts; the per-shape counts come apart."""

from __future__ import annotations

from sqlalchemy import event, text

from qsnap_gui.engine import views
from qsnap_gui.engine.targets import get_target, list_targets, target_missing
from qsnap_gui.store.queries import (
    band_counts,
    band_shape_counts,
    counts_in_one_pass,
    list_bands,
    with_shapes,
)
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
    timings = (figures.targets, figures.cli_targets, figures.bands)
    assert all(0 < t.median <= t.worst for t in timings)
    assert figures.shapes_seconds > 0
    assert 0 <= figures.rounds_during_job < figures.rounds  # read until after the job's end
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
    shown = render([figures_of_scale])
    assert f"worst of {figures.rounds} reads, {figures.rounds_during_job} of them" in shown
    assert f"targets list {figures.targets.median:.2f}s, {figures.targets.worst:.2f}s" in shown


# --- the adaptive fast counts, the two-step targets list, thousands of targets ----------------

MANY_TARGETS = """
    with t as (
        insert into targets (title, population_status, created_at, updated_at)
        select 'many ' || g,
               case when g % 10 = 0 then 'populating' when g % 13 = 0 then null
                    else 'populated' end,
               localtimestamp(0), localtimestamp(0)
        from generate_series(1, :n) g returning id
    ), b as (
        insert into target_bands (target_id, title, is_bullseye, created_at, updated_at)
        select t.id, 'band ' || k, case when k = 3 then '1' else '0' end,
               localtimestamp(0), localtimestamp(0)
        from t, generate_series(1, 3) k returning id
    )
    insert into target_populations (target_band_id, me_file_id, matching_tags_snapshot)
    select b.id, f.id,
           case when (b.id + f.id) % 3 = 0 then null
                when (b.id + f.id) % 7 = 0 then '{}'::jsonb else '{"tags": []}'::jsonb end
    from b cross join lateral
         (select id from me_files order by id limit :per offset b.id % 50) f
"""

PLAIN_TARGETS = """
    select t.id,
           count(tp.id) filter (where tp.me_file_id is not null),
           count(tp.id) filter (where tp.me_file_id is not null
                                and tp.matching_tags_snapshot is null),
           count(tp.id) filter (where f.id is null)
    from targets t left join target_bands b on b.target_id = t.id
    left join target_populations tp on tp.target_band_id = b.id
    left join me_files f on f.id = tp.me_file_id group by t.id
"""


def add_targets(conn, n: int, per_band: int = 4) -> None:
    """``n`` targets of 3 bands, ``per_band`` rows each, a third of them NULL."""
    conn.execute(text(MANY_TARGETS), {"n": n, "per": per_band})


class Statements:
    """Counts the statements an engine runs while entered."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.seen: list[str] = []

    def _record(self, conn, cursor, statement, parameters, context, executemany) -> None:
        self.seen.append(statement)

    def __enter__(self) -> Statements:
        event.listen(self.engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *exc) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)


def write_and_settle(engine, sql: str, *, vacuum: bool = True) -> None:
    """Run ``sql``, its activity counters flushed with its commit, then (with ``vacuum``)
    VACUUM ANALYZE the table, as autovacuum would once the writing is over."""
    with engine.begin() as conn:
        conn.execute(text(sql))
        conn.execute(text("select pg_stat_force_next_flush()"))
    if vacuum:
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(text("vacuum analyze target_populations"))


def test_fast_counts_equal_plain_counts_by_either_path(fresh_db):
    """Few NULLs: two index reads; many (say the statistics): one pass counts both."""
    with fresh_db.engine.begin() as conn:
        _odd_rows(conn)
    for many_nulls in (False, True):
        if many_nulls:
            sql = "update target_populations set matching_tags_snapshot = null"
            write_and_settle(fresh_db.engine, f"{sql} where id % 50 <> 0")
        else:  # a few NULLs left: the demo's own are a third of the rows
            sql = "update target_populations set matching_tags_snapshot = '{\"tags\": []}'"
            write_and_settle(
                fresh_db.engine, f"{sql} where matching_tags_snapshot is null and id % 9 <> 0"
            )
        with fresh_db.engine.connect() as conn:
            plain = {r[0]: tuple(r[1:3]) for r in conn.execute(text(PLAIN_BANDS))}
            ids = list(conn.execute(text("select id from target_bands")).scalars())
            assert counts_in_one_pass(conn) is many_nulls
            with Statements(fresh_db.engine) as run:
                counts = band_counts(conn, ids)
        assert {b: (c.population, c.missing) for b, c in counts.items()} == {
            b: plain[b] for b in ids if b in plain and plain[b][0]
        }
        assert sum(c.missing for c in counts.values()) > 0
        one_pass = any("count(*) filter" in s for s in run.seen)
        assert one_pass is many_nulls, run.seen


def test_a_table_being_rewritten_is_counted_in_one_read_not_from_the_unique_index(fresh_db):
    """Snapshots rewritten (a job, a backfill) leave a dead row version on every page they
    touch, which the NULL share of the statistics does not see: an index-only scan would then
    fetch every entry from the table, so the fast counts read the table once instead, until
    a VACUUM settles it."""
    engine = fresh_db.engine
    with engine.begin() as conn:
        _odd_rows(conn)
    fill = "update target_populations set matching_tags_snapshot = '{\"tags\": []}'"
    write_and_settle(engine, f"{fill} where matching_tags_snapshot is null and id % 9 <> 0")
    with engine.connect() as conn:
        assert not counts_in_one_pass(conn)
    write_and_settle(engine, f"{fill} where matching_tags_snapshot is not null", vacuum=False)
    for settled in (False, True):
        if settled:
            write_and_settle(engine, "select 1")
        with engine.connect() as conn:
            bands_plain = {r[0]: tuple(r[1:3]) for r in conn.execute(text(PLAIN_BANDS))}
            targets_plain = {r[0]: tuple(r[1:]) for r in conn.execute(text(PLAIN_TARGETS))}
            ids = list(conn.execute(text("select id from target_bands")).scalars())
            assert counts_in_one_pass(conn) is not settled
            with Statements(engine) as run:
                listed = list_targets(conn, coverage=False)
                counts = band_counts(conn, ids)
            with Statements(engine) as cli:
                full = list_targets(conn, orphans=True)
        assert {t.id: t.population for t in listed} == {t: c[0] for t, c in targets_plain.items()}
        assert {t.id: (t.population, t.missing, t.orphans) for t in full} == targets_plain
        assert sum(t.orphans for t in full) > 0
        index_only_off = any("enable_indexonlyscan" in s for s in cli.seen)
        assert index_only_off is not settled, cli.seen
        assert {b: (c.population, c.missing) for b, c in counts.items()} == {
            b: bands_plain[b] for b in ids if b in bands_plain and bands_plain[b][0]
        }
        one_read = [s for s in run.seen if "count(*) filter" in s]
        assert len(one_read) == (0 if settled else 2), run.seen


def test_targets_list_first_without_coverage_then_its_missing(fresh_db):
    with fresh_db.engine.begin() as conn:
        _odd_rows(conn)
        add_targets(conn, 30)
    with fresh_db.engine.connect() as conn:
        plain = {r[0]: tuple(r[1:]) for r in conn.execute(text(PLAIN_TARGETS))}
        first = list_targets(conn, coverage=False)
        missing = target_missing(conn)
    assert {t.id: t.population for t in first} == {t: p for t, (p, _m, _o) in plain.items()}
    assert all(t.missing is None and t.coverage is None for t in first)
    assert {t: m for t, m in missing.items() if m} == {
        t: m for t, (_p, m, _o) in plain.items() if m
    }
    shown = views.list_targets(fresh_db)
    assert [t.id for t in shown] == [t.id for t in first] and shown[0].missing is None
    full = views.list_targets(fresh_db, coverage=True)
    assert {t.id: t.missing for t in full} == {t: m for t, (_p, m, _o) in plain.items()}


def test_targets_list_statements_do_not_grow_with_targets(fresh_db):
    """Every count, the stuck check and the application's jobs: one statement each over all
    targets, whether there are 10 or 300 more, by either way of counting."""
    engine = fresh_db.engine
    counts: dict[tuple[bool, int], int] = {}
    added = 0
    for n in (10, 300):
        with engine.begin() as conn:
            add_targets(conn, n - added)
        added = n
        for many_nulls in (True, False):
            sql = "update target_populations set matching_tags_snapshot = "
            if many_nulls:
                write_and_settle(engine, f"{sql} null where id % 50 <> 0")
            else:
                write_and_settle(
                    engine, f"{sql} '[]' where matching_tags_snapshot is null and id % 9 <> 0"
                )
            with engine.connect() as conn:
                assert counts_in_one_pass(conn) is many_nulls
                with Statements(engine) as run:
                    rows = list_targets(conn, orphans=True)
                    list_targets(conn, coverage=False)
                    target_missing(conn)
            assert sum(t.title is not None and t.title.startswith("many ") for t in rows) == n
            assert sum(t.stuck for t in rows) >= n // 10
            counts[(many_nulls, n)] = len(run.seen)
    assert counts[(True, 10)] == counts[(True, 300)]
    assert counts[(False, 10)] == counts[(False, 300)]
    assert max(counts.values()) <= 20


def test_one_target_reads_only_its_own_bands(fresh_db):
    with fresh_db.engine.begin() as conn:
        add_targets(conn, 5)
    with fresh_db.engine.connect() as conn:
        plain = {r[0]: tuple(r[1:]) for r in conn.execute(text(PLAIN_TARGETS))}
        one = get_target(conn, 1)
    assert (one.population, one.missing) == plain[1][:2]
