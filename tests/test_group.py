"""The group snapshot engine (several bands in one stream) against the Python reference, the
band jobs, locks held elsewhere, per-band cancels and failures."""

from __future__ import annotations

import random
import threading
from collections import Counter

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import make_url

from qsnap_gui.domain.jobs import CancelFlag, JobState, Mode, Progress
from qsnap_gui.engine import snapshot_sql, snapshots
from qsnap_gui.engine.group import snapshot_group
from qsnap_gui.engine.snapshots import GROUP_SESSION, snapshot_band
from qsnap_gui.store import locks
from qsnap_gui.store.db import open_database
from tests import reference
from tests.prodcases import build_production_cases
from tests.worlds import World, load_world, stored_snapshots

TARGET_BANDS = [1, 2, 3]  # the demo's target 1: 944, 83 and 206 populations
WRITES = {
    Mode.MISSING: {"missing"},
    Mode.REPAIR: {"missing", "broken"},
    Mode.FORCE: {"missing", "broken", "stale"},
}
RELAY = {"staged": 10**9, "relayed": 1}


@pytest.fixture(scope="module")
def prod_template(create_db):
    url = create_db("group_prod_template")
    build_production_cases(url)
    return make_url(url).database


@pytest.fixture
def prod(create_db, prod_template):
    database = open_database(create_db("group_prod", template=prod_template))
    yield database
    database.dispose()


@pytest.fixture
def twin(create_db, demo_template):
    """A second copy of the demo database, for the band jobs to write beside the group."""
    database = open_database(create_db("group_twin", template=demo_template))
    yield database
    database.dispose()


def rows_text(engine, band_ids) -> dict[int, str | None]:
    """Each population of the bands: its snapshot exactly as stored (jsonb text)."""
    with engine.connect() as conn:
        return dict(
            conn.execute(
                text(
                    "select id, matching_tags_snapshot::text from target_populations "
                    "where target_band_id = any(:b)"
                ),
                {"b": list(band_ids)},
            ).all()
        )


def count_null_carriers(engine) -> int:
    """Offers and ad events of the target's bands whose snapshot is NULL."""
    with engine.connect() as conn:
        return sum(
            conn.execute(
                text(
                    f"select count(*) from {table} where matching_tags_snapshot is null "
                    "and target_band_id = any(:b)"
                ),
                {"b": TARGET_BANDS},
            ).scalar_one()
            for table in reference.CARRIERS
        )


def updated(engine) -> dict[int, object]:
    with engine.connect() as conn:
        return dict(conn.execute(text("select id, updated_at from target_populations")).all())


def unsettle(engine) -> None:
    """Leave work for every mode: NULL rows, broken shapes, stale rows and NULL carriers."""
    with engine.begin() as conn:
        conn.execute(
            text("update target_populations set matching_tags_snapshot = null where id % 3 = 0")
        )
        conn.execute(
            text(
                "update target_populations set matching_tags_snapshot = '{}'::jsonb "
                "where id % 7 = 1"
            )
        )
        conn.execute(
            text(
                "update target_populations set matching_tags_snapshot = '{\"tags\": []}'::jsonb "
                "where id % 11 = 2"
            )
        )
        for table in reference.CARRIERS:
            conn.execute(text(f"update {table} set matching_tags_snapshot = null where id % 2 = 0"))


@pytest.mark.parametrize("relay", list(RELAY))
@pytest.mark.parametrize("mode", list(Mode))
def test_every_mode_writes_what_the_reference_says_and_carries_it(prod, mode, relay):
    """Every band of a production-shaped database (orphans, NULLs, ties, odd links, JSON null,
    NULL carriers) in one group: exactly the mode's rows are written, each from its own band."""
    engine = prod.engine
    with engine.connect() as conn:
        verdicts = reference.judge(conn)
        before = reference.populations(conn)
        carriers = reference.carriers(conn)
        bands = sorted(reference.processed_bands(conn))
    to_write = {p for p, v in verdicts.items() if v in WRITES[mode]}
    assert to_write, "the edge cases leave rows for every mode to write"
    results = snapshot_group(engine, bands, mode=mode, split_rows=RELAY[relay], backoff=0)
    assert list(results) == bands
    assert {r.state for r in results.values()} == {JobState.SUCCEEDED}, results
    assert {r.attempts for r in results.values()} == {1}, "written by the group, not band jobs"
    per_band = Counter(before[p].band for p in to_write)
    assert {b: r.rows_written for b, r in results.items()} == {b: per_band[b] for b in bands}
    with engine.connect() as conn:
        build = reference.band_snapshot_builder(conn)
        after = reference.populations(conn)
        assert reference.normalised(reference.carriers(conn)) == reference.normalised(
            reference.expected_carriers(carriers, conn, set(bands))
        )
        left = set(reference.judge(conn).values())
    for pid, row in before.items():
        if pid in to_write:
            assert after[pid].snapshot == build(row.band, row.me_file), pid
        else:  # orphans, and rows this mode leaves alone (right ones included)
            assert after[pid] == row, (pid, verdicts[pid])
    assert not left & WRITES[mode]


@pytest.mark.parametrize("most_traits", [snapshot_sql.LOOKUP_TRAITS, 0])
@pytest.mark.parametrize("relay", list(RELAY))
def test_tags_read_me_file_by_me_file_write_the_same(
    prod, small_bands, relay, most_traits, monkeypatch
):
    """The lookup form (tags through the me_file_id index, for groups of few rows) builds the
    same snapshots as the planner's form, each from its own band, whether a band looks up only
    its own traits' tags or every tag of the me_file."""
    monkeypatch.setattr(snapshot_sql, "LOOKUP_SHARE", 1e9)
    monkeypatch.setattr(snapshot_sql, "LOOKUP_TRAITS", most_traits)
    for database in (prod, small_bands):
        with database.engine.connect() as conn:
            bands = sorted(reference.processed_bands(conn))
        results = snapshot_group(database.engine, bands, mode=Mode.FORCE, split_rows=RELAY[relay])
        assert {r.state for r in results.values()} == {JobState.SUCCEEDED}
        assert_right(database.engine, bands)


@pytest.mark.parametrize("relay", list(RELAY))
def test_a_target_as_one_group_equals_its_band_jobs_and_the_reference(fresh_db, twin, relay):
    """Three bands of one target read as one group write, byte for byte, what three band jobs
    write on a twin database; a second force run rewrites nothing (updated_at stays)."""
    for database in (fresh_db, twin):
        unsettle(database.engine)
    null_carriers = count_null_carriers(fresh_db.engine)
    seen: list[Progress] = []
    results = snapshot_group(
        fresh_db.engine,
        TARGET_BANDS,
        mode=Mode.FORCE,
        split_rows=RELAY[relay],
        progress=seen.append,
    )
    jobs = {
        b: snapshot_band(twin.engine, b, mode=Mode.FORCE, split_rows=RELAY[relay])
        for b in TARGET_BANDS
    }
    assert {r.state for r in [*results.values(), *jobs.values()]} == {JobState.SUCCEEDED}
    assert {r.attempts for r in results.values()} == {1}, "written by the group, not band jobs"
    assert {b: r.rows_written for b, r in results.items()} == {
        b: r.rows_written for b, r in jobs.items()
    }
    assert {b: r.rows_total for b, r in results.items()} == {
        b: r.rows_total for b, r in jobs.items()
    }
    assert rows_text(fresh_db.engine, TARGET_BANDS) == rows_text(twin.engine, TARGET_BANDS)
    with fresh_db.engine.connect() as conn, twin.engine.connect() as twin_conn:
        assert reference.carriers(conn) == reference.carriers(twin_conn)
    assert_right(fresh_db.engine, TARGET_BANDS)
    assert count_null_carriers(fresh_db.engine) < null_carriers
    finals = {p.band_id: p for p in seen if p.state is JobState.SUCCEEDED}
    assert {b: (p.rows_done, p.batches) for b, p in finals.items()} == {
        b: (r.rows_total, r.batches) for b, r in results.items()
    }
    running = [p for p in seen if p.state is JobState.RUNNING and p.batch]
    assert {p.band_id for p in running} == set(TARGET_BANDS)
    assert all(p.rows_done <= p.rows_total and p.batch <= p.batches for p in running)

    stamps = updated(fresh_db.engine)
    again = snapshot_group(fresh_db.engine, TARGET_BANDS, mode=Mode.FORCE)
    assert [r.rows_written for r in again.values()] == [0, 0, 0]
    assert updated(fresh_db.engine) == stamps


def small_bands_world(targets: int = 100, bands_per_target: int = 3) -> World:
    """Many targets of a few small bands (1 to 20 rows each) over one catalogue of traits."""
    traits = [(1, "Pets", 1, None), (2, "Home", 2, None), (3, "Zip", 1, None)]
    traits += [(10 + n, f"pet {n}", n % 3, 1) for n in range(6)]
    traits += [(20 + n, f"home {n}", n, 2) for n in range(4)]
    traits += [(30 + n, f"{n:05}", n, 3) for n in range(5)]
    groups = {1: [10, 11, 12, 13, 14, 15], 2: [20, 21], 3: [22, 23], 4: [30, 31, 32], 5: [99]}
    me_files = list(range(1, 401))
    tags = []
    for m in me_files:
        tags += [(m, 10 + m % 6, f"pet {m % 6}"), (m, 20 + m % 4, None if m % 5 else "")]
        tags += [(m, 30 + m % 5, f"{m % 5:05}")] if m % 3 else [(m, 11, "second pet")]
    bands, populations = [], []
    band_id = 0
    for target in range(1, targets + 1):
        for ring in range(bands_per_target):
            band_id += 1
            picked = [1 + (target + ring + k) % 5 for k in range(ring + 1)]
            bands.append((band_id, target, ring == bands_per_target - 1, picked))
            size = 1 + (band_id * 7) % 20
            start = (band_id * 13) % 380
            populations += [(band_id, m) for m in me_files[start : start + size]]
    offers = [(m, b, None) for b, m in populations[::9]]
    # the bands' rows interleave in id order, as populations made over time do
    random.Random(5).shuffle(populations)
    return World(
        traits=traits,
        me_files=me_files,
        tags=tags,
        groups=groups,
        bands=bands,
        populations=populations,
        offers=offers,
        ad_events=offers[::2],
    )


@pytest.fixture(scope="module")
def small_bands_template(create_db):
    url = create_db("group_small_template")
    database = open_database(url, check_schema=False)
    load_world(database.engine, small_bands_world())
    database.dispose()
    return make_url(url).database


@pytest.fixture
def small_bands(create_db, small_bands_template):
    database = open_database(create_db("group_small", template=small_bands_template))
    yield database
    database.dispose()


def band_list(engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(text("select id from target_bands order by id")).scalars())


# a line feed, quotes, a backslash, a tab, a control character and letters beyond ASCII
ODD_TEXT = 'line one\nline "two"\t\\ \u00e9 \u2713 \u0001'


@pytest.mark.parametrize(("relay", "lookup_share"), [("relayed", 0), ("staged", 1e9)])
def test_line_feeds_and_quotes_in_values_and_names_come_through(
    fresh_db, twin, relay, lookup_share, monkeypatch
):
    """A batch's snapshots travel to its writer one per line: a line feed in a tag value or a
    parent's name (escaped in the JSON) neither splits a snapshot nor changes one byte of it,
    with tags read by trait or me_file by me_file."""
    monkeypatch.setattr(snapshot_sql, "LOOKUP_SHARE", lookup_share)
    for database in (fresh_db, twin):
        with database.engine.begin() as conn:
            conn.execute(
                text("update me_file_tags set tag_value = :v || '#' || id where id % 3 = 0"),
                {"v": ODD_TEXT},
            )
            conn.execute(
                text(
                    "update traits set trait_name = trait_name || :v where parent_trait_id is null"
                ),
                {"v": ODD_TEXT},
            )
    results = snapshot_group(
        fresh_db.engine, TARGET_BANDS, mode=Mode.FORCE, split_rows=RELAY[relay]
    )
    jobs = [
        snapshot_band(twin.engine, b, mode=Mode.FORCE, split_rows=RELAY[relay])
        for b in TARGET_BANDS
    ]
    assert {r.state for r in [*results.values(), *jobs]} == {JobState.SUCCEEDED}
    assert {r.attempts for r in results.values()} == {1}, "the group wrote them, first time"
    written = rows_text(fresh_db.engine, TARGET_BANDS)
    assert written == rows_text(twin.engine, TARGET_BANDS)
    escaped = 'line one\\nline \\"two\\"\\t\\\\ \u00e9 \u2713 \\u0001'
    odd_names = [s for s in written.values() if s and f'{escaped}",' in s]
    odd_values = [s for s in written.values() if s and f"{escaped}#" in s]
    assert len(odd_names) > len(written) // 4, "parents' names with a line feed were written"
    assert len(odd_values) > len(written) // 4, "tag values with a line feed were written"
    assert_right(fresh_db.engine, TARGET_BANDS)


def test_many_small_bands_in_fewer_transactions_than_bands(small_bands):
    engine = small_bands.engine
    bands = band_list(engine)
    assert len(bands) == 300
    with engine.connect() as conn:
        ids = conn.execute(
            text("select target_band_id, id from target_populations order by id")
        ).all()
    batch_size = 100
    expected_batches = Counter(
        band for band, _b in {(b, n // batch_size) for n, (b, _) in enumerate(ids)}
    )
    per_band = Counter(band for band, _id in ids)
    commits = Counter()
    event.listen(engine, "commit", lambda conn: commits.update(["commit"]))
    results = snapshot_group(engine, bands, batch_size=batch_size)
    assert {r.state for r in results.values()} == {JobState.SUCCEEDED}
    assert {b: (r.rows_written, r.rows_total, r.batches) for b, r in results.items()} == {
        b: (per_band[b], per_band[b], expected_batches[b]) for b in bands
    }
    batches = -(-len(ids) // batch_size)
    assert batches < len(bands) // 5
    assert commits["commit"] <= batches + 10, commits  # and a few to set up and end
    assert_right(engine, bands)
    with engine.connect() as conn:
        assert reference.left_null(conn) == 0
    assert sum(r.rows_written for r in snapshot_group(engine, bands).values()) == 0


def test_a_staged_batch_write_hashes_its_rows_with_the_table(small_bands):
    """Each batch of the staged path reads its rows from the stage table: with no statistics
    on that table a batch was estimated at a handful of rows and matched to its populations
    by a nested loop over every pair; analysed, the update hashes them."""
    engine = small_bands.engine
    bands = band_list(engine)
    with engine.connect() as conn:
        plan, lookup = snapshot_sql.prepare_group(conn, bands, Mode.REPAIR, 500)
        snapshot_sql.stage_group(conn, lookup)
        sql = snapshot_sql.apply_sql(engine, Mode.REPAIR, grouped=True)
        explained = conn.execute(text("explain (format json) " + sql), {"b": 0, "skip": []})
        tree = explained.scalar()[0]["Plan"]
        conn.rollback()
    assert len(plan[0]) > 1, "the first batch holds rows of several bands"

    def nodes(node: dict):
        yield node
        for child in node.get("Plans", []):
            yield from nodes(child)

    updates = [
        n
        for n in nodes(tree)
        if n["Node Type"] == "ModifyTable" and n.get("Relation Name") == "target_populations"
    ]
    assert len(updates) == 1, tree
    assert updates[0]["Plans"][-1]["Node Type"] == "Hash Join", updates[0]


def assert_right(engine, bands) -> None:
    """Every population of the bands holds what the reference builds (one read of the world)."""
    with engine.connect() as conn:
        build = reference.band_snapshot_builder(conn)
        wanted = set(bands)
        for p in reference.populations(conn).values():
            if p.band in wanted and p.me_file is not None:
                assert p.snapshot == build(p.band, p.me_file), p


def run_in_thread(work):
    box: dict = {}

    def target():
        try:
            box["result"] = work()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()

    def join():
        thread.join(120)
        assert not thread.is_alive(), "the group hung"
        if "error" in box:
            raise box["error"]
        return box["result"]

    return join


def test_a_band_locked_elsewhere_runs_after_the_stream(small_bands, qtbot):
    engine = small_bands.engine
    bands = band_list(engine)[:30]
    held = bands[4]
    seen: list[Progress] = []
    with engine.connect() as other:
        assert locks.try_lock(other, locks.BAND, held)
        other.commit()
        join = run_in_thread(lambda: snapshot_group(engine, bands, progress=seen.append))
        qtbot.waitUntil(
            lambda: any(p.band_id == held and p.state is JobState.WAITING for p in list(seen)),
            timeout=60_000,
        )
        done = {p.band_id for p in list(seen) if p.state is JobState.SUCCEEDED}
        assert done == set(bands) - {held}
        with engine.connect() as conn:
            assert set(stored_snapshots(conn, held).values()) == {None}
        locks.unlock(other, locks.BAND, held)
        other.commit()
        results = join()
    assert {r.state for r in results.values()} == {JobState.SUCCEEDED}
    assert list(results) == bands
    assert_right(engine, bands)


def batch_of(engine, bands: list[int], batch_size: int) -> dict[int, int]:
    """population id -> the batch the group puts it in (mode missing, every row NULL)."""
    with engine.connect() as conn:
        ids = conn.execute(
            text(
                "select id from target_populations where target_band_id = any(:b) "
                "and me_file_id is not null order by id"
            ),
            {"b": bands},
        ).scalars()
        return {pid: n // batch_size for n, pid in enumerate(ids)}


@pytest.mark.parametrize("relay", list(RELAY))
def test_cancelling_one_band_stops_its_rows_and_no_others(small_bands, relay):
    engine = small_bands.engine
    bands = band_list(engine)
    batch_size = 100
    with engine.connect() as conn:
        last_band = conn.execute(
            text("select target_band_id from target_populations order by id desc limit 1")
        ).scalar_one()
    flags = {b: CancelFlag() for b in bands}
    first: list[int] = []

    def progress(p: Progress) -> None:
        if p.state is JobState.RUNNING and p.batch and not first:
            first.append(p.band_id)
            flags[last_band].cancel()

    results = snapshot_group(
        engine,
        bands,
        batch_size=batch_size,
        progress=progress,
        cancels=flags,
        split_rows=RELAY[relay],
        writers=2,
    )
    assert results[last_band].state is JobState.CANCELLED
    assert {r.state for b, r in results.items() if b != last_band} == {JobState.SUCCEEDED}
    batches = batch_of(engine, bands, batch_size)
    with engine.connect() as conn:
        written = {p for p, s in stored_snapshots(conn, last_band).items() if s is not None}
    assert_right(engine, [b for b in bands if b != last_band])
    assert results[last_band].rows_written == len(written)
    # the flag was set as the first batch committed: only batches already written or in a
    # writer's hands (relayed: one per writer) can hold the cancelled band's rows
    in_flight = 0 if relay == "staged" else 2
    assert {batches[p] for p in written} <= set(range(1 + in_flight))
    assert max(batches.values()) > 1 + in_flight


@pytest.mark.parametrize("relay", list(RELAY))
def test_cancelling_every_band_mid_stream_ends_them_all_cancelled(small_bands, relay):
    engine = small_bands.engine
    bands = band_list(engine)
    flags = {b: CancelFlag() for b in bands}

    def progress(p: Progress) -> None:
        if p.state is JobState.RUNNING and p.batch:
            for flag in flags.values():
                flag.cancel()

    results = snapshot_group(
        engine, bands, batch_size=50, progress=progress, cancels=flags, split_rows=RELAY[relay]
    )
    assert {r.state for r in results.values()} == {JobState.CANCELLED}
    kept = sum(r.rows_written for r in results.values())
    assert kept > 0
    with engine.connect() as conn:
        nulls = conn.execute(
            text("select count(*) from target_populations where matching_tags_snapshot is null")
        ).scalar_one()
    assert nulls > 0
    again = snapshot_group(engine, bands)
    assert {r.state for r in again.values()} == {JobState.SUCCEEDED}
    assert sum(r.rows_written for r in again.values()) == nulls


def end_group_sessions(engine) -> int:
    """Terminate every session of a group job; returns how many."""
    with engine.connect() as conn:
        return len(
            conn.execute(
                text(
                    "select pg_terminate_backend(pid) from pg_stat_activity "
                    "where application_name = :a"
                ),
                {"a": GROUP_SESSION},
            ).all()
        )


@pytest.mark.parametrize("relay", list(RELAY))
def test_a_terminated_session_is_retried_and_the_rows_end_right(small_bands, relay):
    engine = small_bands.engine
    bands = band_list(engine)
    ended: list[int] = []

    def progress(p: Progress) -> None:
        if p.state is JobState.RUNNING and p.batch and p.attempt == 1 and not ended:
            ended.append(end_group_sessions(engine))

    lines: list[str] = []
    results = snapshot_group(
        engine,
        bands,
        batch_size=50,
        progress=progress,
        split_rows=RELAY[relay],
        backoff=0,
        log_line=lines.append,
    )
    assert ended and ended[0] >= 1
    assert {r.state for r in results.values()} == {JobState.SUCCEEDED}, results
    assert {r.attempts for r in results.values()} == {2}
    assert any("lost the database connection" in line for line in lines), lines
    assert_right(engine, bands)


def test_a_statement_timeout_on_every_attempt_fails_every_band_with_the_cause(small_bands):
    engine = small_bands.engine
    bands = band_list(engine)[:20]
    with engine.begin() as conn:
        name = conn.execute(text("select current_database()")).scalar_one()
        conn.execute(text(f'alter database "{name}" set statement_timeout = 1'))
    engine.dispose()
    try:
        results = snapshot_group(engine, bands, max_attempts=2, backoff=0)
    finally:
        with engine.begin() as conn:
            conn.execute(text("set local statement_timeout = 0"))
            conn.execute(text(f'alter database "{name}" reset statement_timeout'))
        engine.dispose()
    assert {r.state for r in results.values()} == {JobState.FAILED}
    assert {r.attempts for r in results.values()} == {2}
    errors = {r.error for r in results.values()}
    assert all(e and "exceeded the statement timeout of 1ms" in e for e in errors), errors
    with engine.connect() as conn:
        assert locks.held_elsewhere(conn, locks.BAND, bands) == set()


def test_a_writer_that_cannot_connect_fails_every_band_clearly(small_bands, monkeypatch):
    """Any exception in a writer thread fails the group in bounded time, naming its step,
    with nothing written and no band left locked."""
    engine = small_bands.engine
    bands = band_list(engine)[:40]
    real = snapshots._job_session

    def broken_in_writers(conn, name):
        if "writer" in threading.current_thread().name:
            raise RuntimeError("pool exhausted")
        return real(conn, name)

    monkeypatch.setattr(snapshots, "_job_session", broken_in_writers)
    join = run_in_thread(
        lambda: snapshot_group(
            engine, bands, batch_size=10, split_rows=1, max_attempts=2, backoff=0
        )
    )
    results = join()
    assert {r.state for r in results.values()} == {JobState.FAILED}
    assert {r.attempts for r in results.values()} == {2}
    assert all(
        "connecting a writer failed: RuntimeError: pool exhausted" in r.error
        for r in results.values()
    )
    with engine.connect() as conn:
        for band in bands:
            assert set(stored_snapshots(conn, band).values()) == {None}
        assert locks.held_elsewhere(conn, locks.BAND, bands) == set()


def test_a_build_by_trait_never_probes_the_tags_row_by_row(fresh_db):
    """Read by trait, the bands' trait ids must never become an index condition beside each
    row's me_file: the planner, left free, probed the (me_file_id, trait_id) index once per row
    with every trait id (at a million rows a build that had not begun to return after 10
    minutes). The test world is small enough for the planner to want that probe."""
    engine = fresh_db.engine
    with engine.connect() as conn:
        snapshot_sql.prepare_group(conn, TARGET_BANDS, Mode.FORCE, 500)
        conn.commit()
        build = "explain (format json) " + snapshot_sql.group_batches_sql(lookup=False)

        def probes() -> list[dict]:
            tree = conn.execute(text(build)).scalar()[0]["Plan"]
            conn.rollback()
            return [
                n
                for n in plan_nodes(tree)
                if n["Node Type"] == "Nested Loop"
                and any(c.get("Relation Name") == "me_file_tags" for c in plan_nodes(n))
            ]

        conn.execute(text("set local enable_indexscan = off"))
        assert probes(), "the planner wants a probe per row here: this test can fail"
        snapshot_sql.tune_group_compute(conn, lookup=False)
        assert probes() == []


def plan_nodes(node: dict):
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


def test_a_writer_finds_its_batch_by_id_when_the_statistics_say_the_table_is_empty(fresh_db):
    """A refresh refills a table its statistics call empty (emptied, vacuumed, then a
    million new rows): a nested loop then looks free that reads a whole band for each row of
    the batch (10 s of CPU per 500-row batch at a million rows). The writers only hash."""
    engine = fresh_db.engine
    with engine.connect() as conn:
        conn.execute(text("create temporary table kept as select * from target_populations"))
        conn.execute(text("delete from target_populations"))
        conn.commit()
        with engine.connect() as other:
            other.execution_options(isolation_level="AUTOCOMMIT")
            other.execute(text("vacuum (analyze, truncate false) target_populations"))
        conn.execute(text("insert into target_populations select * from kept"))
        conn.commit()
        assert (
            conn.execute(
                text("select reltuples from pg_class where relname = 'target_populations'")
            ).scalar()
            == 0
        )
        rows = conn.execute(
            text(
                "select id, target_band_id from target_populations "
                "where target_band_id = any(:b) order by id limit 3"
            ),
            {"b": TARGET_BANDS},
        ).all()
        batch = {
            "ids": "{" + ",".join(str(r[0]) for r in rows) + "}",
            "bands": "{" + ",".join(str(r[1]) for r in rows) + "}",
            "snaps": "\n".join('{"tags": []}' for _ in rows),
            "skip": "{}",
        }

        def loops(mode: Mode) -> list[dict]:
            statement = "explain (format json) " + snapshot_sql.write_sql(engine, mode, True)
            tree = conn.execute(text(statement), batch).scalar()[0]["Plan"]
            return [
                n
                for n in plan_nodes(tree)
                if n["Node Type"] == "Nested Loop"
                and any(c.get("Relation Name") == "target_populations" for c in plan_nodes(n))
            ]

        assert loops(Mode.MISSING), "the planner wants the loop here: this test can fail"
        snapshots._writer_session(conn)
        for mode in Mode:
            assert loops(mode) == [], mode
            tree = conn.execute(
                text("explain (format json) " + snapshot_sql.write_sql(engine, mode, True)), batch
            ).scalar()[0]["Plan"]
            scans = [
                n.get("Index Cond") or n.get("Recheck Cond") or n["Node Type"]
                for n in plan_nodes(tree)
                if n.get("Relation Name") == "target_populations" and "Scan" in n["Node Type"]
            ]
            assert scans and all("(id = ANY" in scan for scan in scans), (mode, scans)
        conn.rollback()
