"""The backfill scan over many small bands (issue 19: its cost follows the rows, not the number
of bands) and stale repair that writes the stale rows only (issue 18).

Expected counts come from tests/reference.py (Python, no SQL shared with the scan).
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from sqlalchemy import event, text

from qsnap_gui.domain.codec import broken_sql, is_broken
from qsnap_gui.domain.errors import UsageError
from qsnap_gui.engine import backfill as bf
from qsnap_gui.engine import snapshot_sql
from qsnap_gui.engine.backfill import Category
from qsnap_gui.engine.flows import run_backfill
from qsnap_gui.engine.snapshots import CancelFlag, JobState, Mode
from qsnap_gui.store.db import open_database
from tests import reference
from tests.worlds import World, load_world

TARGETS = 6
ME_FILES = 60
ALL = frozenset(Category)


def marketplace() -> World:
    """Six targets of three bands (outer, ring, Bullseye), every me_file in one band of each.
    Age and Colour share display order 1, and so do Red and Blue: ties a snapshot may hold in
    either order."""
    w = World()
    w.traits = [
        (10, "Age", 1, None),
        (20, "Colour", 1, None),
        (30, "Home Zip Code", 2, None),
        (11, "18-24", 1, 10),
        (12, "25-34", 2, 10),
        (21, "Red", 1, 20),
        (22, "Blue", 1, 20),
        (31, "02140", 2140, 30),
        (32, "02141", 2141, 30),
    ]
    w.me_files = list(range(1, ME_FILES + 1))
    for m in w.me_files:
        w.tags.append((m, 11 if m % 2 else 12, "yes"))
        w.tags.append((m, 21, "red"))
        if m % 3 == 0:
            w.tags.append((m, 22, "blue"))
        w.tags.append((m, 31 if m % 4 else 32, "" if m % 10 == 0 else f"0214{m % 2}"))
    w.groups = {1: [11, 12], 2: [21, 22], 3: [31, 32]}
    for t in range(1, TARGETS + 1):
        w.bands += [(t * 10 + 1, t, False, [1]), (t * 10 + 2, t, False, [1, 2])]
        w.bands.append((t * 10 + 3, t, True, [1, 2, 3]))
        w.populations += [(t * 10 + 1 + (m + t) % 3, m) for m in w.me_files]
    return w


def fill_from_reference(conn) -> None:
    """Every population holds what DOMAIN.md says, two in three with their ties swapped."""
    build = reference.band_snapshot_builder(conn)
    rows = conn.execute(text("select id, target_band_id, me_file_id from target_populations"))
    for pid, band, me in rows.all():
        tags = build(band, me)["tags"]
        if pid % 3:
            tags = swap_ties(tags)
        conn.execute(
            text("update target_populations set matching_tags_snapshot = :s where id = :i"),
            {"s": json.dumps({"tags": tags}), "i": pid},
        )


def swap_ties(tags: list) -> list:
    """The same snapshot with tied parents (and tied children) in the other order."""
    out = [[p[0], p[1], p[2], list(reversed(p[3])) if p[0] == 20 else p[3]] for p in tags]
    if len(out) >= 2 and out[0][2] == out[1][2]:
        out[0], out[1] = out[1], out[0]
    return out


BROKEN_VALUES = [
    "{}",
    "null",
    '"not a snapshot"',
    '[[10, "Age", 1, [[11, "yes", 1]]]]',
    '{"snapshot_at": "2024-01-01", "tags": [{"trait_id": 11, "trait_name": "18-24", '
    '"parent_trait_id": 10}]}',
]


def damage(conn) -> None:
    """NULL, broken and stale rows, an orphan without a me_file and one of a deleted band."""
    conn.execute(
        text("update target_populations set matching_tags_snapshot = null where id % 7 = 0")
    )
    for n, value in enumerate(BROKEN_VALUES):
        conn.execute(
            text(
                "update target_populations set matching_tags_snapshot = cast(:v as jsonb) "
                "where id % 7 = 1 and id % 5 = :n"
            ),
            {"v": value, "n": n},
        )
    make_stale(conn)
    conn.execute(
        text(
            "insert into target_populations (target_band_id, me_file_id, created_at, updated_at) "
            "values (11, null, now(), now()), (999, 1, now(), now())"
        )
    )


def make_stale(conn) -> None:
    """Red has another value now for every fifth me_file: their ring and Bullseye rows."""
    conn.execute(
        text(
            "update me_file_tags set tag_value = 'crimson' where trait_id = 21 and me_file_id % 5 = 0"
        )
    )


def expected(conn) -> dict[int, dict]:
    """Per band, population and every category's count by the reference, with broken shapes."""
    verdicts = reference.judge(conn)
    pops = reference.populations(conn)
    out: dict[int, Counter] = {}
    for pid, verdict in verdicts.items():
        if verdict == "orphan":
            continue
        p = pops[pid]
        c = out.setdefault(p.band, Counter())
        c["population"] += 1
        if verdict != "good":
            c[verdict] += 1
        if verdict == "broken":
            c[str(p.decoded.shape)] += 1
    return out


def as_expected(row: bf.ScanRow) -> Counter:
    c = Counter(population=row.population)
    for category in Category:
        if row.counted(category):
            c[category.value] += row.count(category)
    c.update(row.shapes)
    return +c


@pytest.fixture(scope="module")
def market(create_db):
    database = open_database(create_db("scan_market"), check_schema=False)
    load_world(database.engine, marketplace())
    with database.engine.begin() as conn:
        fill_from_reference(conn)
        damage(conn)
    with database.engine.connect() as conn:
        want = expected(conn)
    assert all(want[b]["stale"] for b in want if b % 10 != 1), "stale rows in rings"
    assert sum(c["broken"] for c in want.values()) and sum(c["missing"] for c in want.values())
    yield database, want
    database.dispose()


@pytest.mark.parametrize(
    ("chunk_rows", "lookup_share"), [(None, None), (45, None), (10, 0), (10, 1e9)]
)
def test_scan_counts_every_small_band_as_the_reference_does(
    market, monkeypatch, chunk_rows, lookup_share
):
    database, want = market
    if chunk_rows:  # several bands per statement, and bands larger than a chunk, on two
        monkeypatch.setattr(bf, "BROKEN_CHUNK_ROWS", chunk_rows)  # connections at once
        monkeypatch.setattr(bf, "STALE_CHUNK_ROWS", chunk_rows)
        monkeypatch.setattr(bf, "PARALLEL_MIN_ROWS", 0)
    if lookup_share is not None:  # a band larger than a chunk: by trait at once, or in chunks
        monkeypatch.setattr(snapshot_sql, "LOOKUP_SHARE", lookup_share)
        with database.engine.begin() as conn:
            conn.execute(text("analyze me_files"))  # the share needs its row count
    seen = []
    with database.engine.connect() as conn:
        result = bf.scan(conn, None, ALL, progress=lambda *a: seen.append(a), measure=False)
    assert [r.band_id for r in result.rows] == [
        t * 10 + b for t in range(1, TARGETS + 1) for b in (3, 2, 1)
    ]
    assert [r.label for r in result.rows[:3]] == ["Bullseye", "Ring 1", "Ring 2"]
    assert {r.band_id: as_expected(r) for r in result.rows} == want
    assert seen[-1][0] == seen[-1][1] > 0
    assert [d for d, _t, _m in seen] == sorted(d for d, _t, _m in seen)


def test_cancel_stops_chunks_running_on_two_connections(market, monkeypatch):
    database, _want = market
    monkeypatch.setattr(bf, "BROKEN_CHUNK_ROWS", 45)
    monkeypatch.setattr(bf, "PARALLEL_MIN_ROWS", 0)
    cancel = CancelFlag()
    steps: list[int] = []

    def progress(done, total, message):
        steps.append(done)
        if done:
            cancel.cancel()

    with database.engine.connect() as conn, pytest.raises(bf.ScanCancelled):
        bf.scan(conn, None, ALL, cancel=cancel, progress=progress)
    assert len(steps) == 2  # the start, then the first chunk: no further step ran
    assert database.engine.pool.checkedout() == 0  # the second connection went back


def test_the_rate_of_small_bands_is_measured_over_many_of_them_at_once(market):
    database, _want = market
    rates: list[float | None] = []
    with database.engine.connect() as conn:
        plans = bf.plan(bf.scan(conn, None, ALL, measure=False))
        assert len(plans) > 3 and max(p.row.population for p in plans) < bf.SAMPLE_ROWS // 3
        statements = count_statements(
            database.engine, lambda: rates.append(bf.measure_rate(conn, plans))
        )
    assert statements == 1 and 10 < rates[0] < 10_000_000


def count_statements(engine, work) -> int:
    statements = []

    def note(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    try:
        work()
    finally:
        event.remove(engine, "before_cursor_execute", note)
    return len(statements)


def test_the_scan_runs_as_many_statements_for_eighteen_bands_as_for_three(market):
    database, _want = market

    def scan(targets):
        with database.engine.connect() as conn:
            rows = bf.scan(conn, targets, ALL, measure=False).rows
        assert len(rows) == 3 * len(targets or range(TARGETS))

    assert count_statements(database.engine, lambda: scan(None)) == count_statements(
        database.engine, lambda: scan([1])
    )


def test_band_counts_many_is_the_scan_of_those_bands(market):
    database, want = market
    with database.engine.connect() as conn:
        scanned = {r.band_id: r for r in bf.scan(conn, None, ALL, measure=False).rows}
        some = [62, 11, 33, 43]
        assert bf.band_counts_many(conn, some, ALL) == {b: scanned[b] for b in some}
        assert bf.band_counts(conn, 22, ALL) == scanned[22]
        only_missing = bf.band_counts_many(conn, [22], [Category.MISSING])[22]
        assert only_missing.missing == want[22]["missing"]
        assert only_missing.broken is None and only_missing.stale is None
        with pytest.raises(UsageError, match="bands 999, 998 do not exist"):
            bf.band_counts_many(conn, [11, 999, 998], ALL)


def test_blank_values_are_judged_in_sql_as_the_codec_judges_them(create_db):
    """Each blank entry probes the me_file's tags on its trait: a value, a blank one, none,
    both, and a trait id beyond the integer range."""
    w = World()
    w.traits = [(30, "Home Zip Code", 2, None), (31, "02140", 2140, 30), (32, "02141", 2141, 30)]
    w.me_files = list(range(1, 8))
    w.tags = [
        (1, 31, "02140"),
        (2, 31, None),
        (3, 31, ""),
        (4, 31, "02140"),
        (4, 31, ""),
        (5, 32, "02141"),
        (6, 31, "02140"),
        (7, 31, "02140"),
        (7, 32, "02141"),
    ]
    w.groups = {1: [31, 32]}
    w.bands = [(11, 1, True, [1])]
    w.populations = [(11, m) for m in w.me_files]
    blank_31 = [[31, None, 2140]]
    snapshots = {
        1: blank_31,
        2: blank_31,
        3: [[31, "", 2140]],
        4: blank_31,
        5: blank_31,
        6: [[31, "02140", 2140], [3_000_000_000, None, 2141]],
        7: [[31, "02140", 2140], [32, "", 2141]],
    }
    database = open_database(create_db("scan_blanks"), check_schema=False)
    try:
        load_world(database.engine, w)
        with database.engine.begin() as conn:
            for me, children in snapshots.items():
                conn.execute(
                    text(
                        "update target_populations set matching_tags_snapshot = cast(:s as jsonb) "
                        "where me_file_id = :m"
                    ),
                    {"s": json.dumps({"tags": [[30, "Home Zip Code", 2, children]]}), "m": me},
                )
        with database.engine.connect() as conn:
            pops = reference.populations(conn)
            tags = reference.me_file_tags(conn)
            want = {p.me_file for p in pops.values() if is_broken(p.decoded, tags[p.me_file])}
            column, me_file = "tp.matching_tags_snapshot", "tp.me_file_id"
            in_sql = conn.execute(
                text(
                    f"select tp.me_file_id from target_populations tp "
                    f"where {broken_sql(column, me_file)}"
                )
            ).scalars()
            row = bf.scan(conn, None, ALL, measure=False).rows[0]
        assert want == {1, 7} == set(in_sql)
        assert row.broken == 2 and row.shapes["null_values"] == 2
    finally:
        database.dispose()


def carriers_world() -> World:
    """The marketplace with an offer and an ad event per population of target 1: a third
    NULL, a third holding another snapshot than their population's."""
    w = marketplace()
    kept = [None, '{"tags": []}', '{"tags": [[10, "Age", 1, [[11, "from the offer", 1]]]]}']
    for n, (band, me) in enumerate(p for p in w.populations if p[0] < 20):
        w.offers.append((me, band, kept[n // 3 % 3]))
        w.ad_events.append((me, band, kept[(n // 3 + 1) % 3]))
    return w


def test_stale_repair_writes_the_stale_rows_and_nothing_else(create_db):
    database = open_database(create_db("scan_stale"), check_schema=False)
    try:
        load_world(database.engine, carriers_world())
        with database.engine.begin() as conn:
            fill_from_reference(conn)
            make_stale(conn)
        with database.engine.connect() as conn:
            verdicts = reference.judge(conn)
            before = {
                pid: (snap, at)
                for pid, snap, at in conn.execute(
                    text(
                        "select id, matching_tags_snapshot::text, updated_at "
                        "from target_populations"
                    )
                )
            }
            carriers_before = reference.carriers(conn)
            scan = bf.scan(conn, [1], [Category.STALE], measure=False)
            band_of = dict(
                conn.execute(text("select id, target_band_id from target_populations")).all()
            )
        stale = {pid for pid, v in verdicts.items() if v == "stale"}
        target_one = {pid for pid, b in band_of.items() if b < 20}
        assert set(verdicts.values()) == {"good", "stale"} and stale & target_one
        assert sum(1 for pid in target_one if pid % 3) > len(stale & target_one)  # ties kept

        # the outer band has no stale row, only offers and ad events left NULL
        plans = bf.plan(scan)
        per_band = Counter(band_of[pid] for pid in stale & target_one)
        assert {p.band_id: (p.mode, p.rows) for p in plans} == {
            11: (Mode.MISSING, 0),
            12: (Mode.FORCE, per_band[12]),
            13: (Mode.FORCE, per_band[13]),
        }
        assert {p.band_id: p.rows_built for p in plans} == {
            11: 0,
            12: scan.row(12).population,
            13: scan.row(13).population,
        }
        outcomes = run_backfill(database.engine, plans)
        assert all(o.state is JobState.SUCCEEDED for o in outcomes)
        assert sum(o.rows_written for o in outcomes) == len(stale & target_one)
        assert all(o.rewritten_unchanged == 0 for o in outcomes)

        with database.engine.connect() as conn:
            after = {
                pid: (snap, at)
                for pid, snap, at in conn.execute(
                    text(
                        "select id, matching_tags_snapshot::text, updated_at "
                        "from target_populations"
                    )
                )
            }
            changed = {pid for pid in before if after[pid] != before[pid]}
            assert changed == stale & target_one
            assert all(after[pid][1] > before[pid][1] for pid in changed)
            verdicts_after = reference.judge(conn)
            assert {pid for pid, v in verdicts_after.items() if v == "stale"} == stale - target_one
            # offers and ad events: only the NULL ones got their population's snapshot
            assert reference.normalised(reference.carriers(conn)) == reference.normalised(
                reference.expected_carriers(carriers_before, conn, set(band_of.values()))
            )
            again = bf.scan(conn, [1], ALL, measure=False)
        assert all(r.count(c) == 0 and not r.offers_left_null for r in again.rows for c in Category)
    finally:
        database.dispose()
