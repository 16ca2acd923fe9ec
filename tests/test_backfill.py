"""Bulk backfill (issue 6): the scan against independent counts, runs per category scope, the
report, and ``qsnap backfill`` with its exit codes.

The shape classifier below is written for these tests with jsonb_typeof, ``?`` and
jsonb_array_elements (the codec uses jsonpath); stale rows are found with the Python reference
builder of tests/worlds.py. Neither shares SQL with qsnap_gui.engine.backfill.
"""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from collections import Counter, defaultdict

import psycopg
import pytest
from sqlalchemy import text

from qsnap_gui.cli import main
from qsnap_gui.domain.errors import UsageError
from qsnap_gui.engine import backfill as bf
from qsnap_gui.engine import runner
from qsnap_gui.engine.backfill import Category
from qsnap_gui.engine.flows import run_backfill
from qsnap_gui.engine.runner import GROUP_ROWS
from qsnap_gui.engine.snapshots import CancelFlag, JobState, Mode
from tests import reference
from tests.reference import judge
from tests.worlds import reference_snapshots

INT = "'^-?[0-9]+$'"


def _is_int(expr: str) -> str:
    return f"(jsonb_typeof({expr}) = 'number' and ({expr})::text ~ {INT})"


def _parent_ok(p: str) -> str:
    return (
        f"case when jsonb_typeof({p}) is distinct from 'array' then false"
        f" when jsonb_array_length({p}) <> 4 then false"
        f" else {_is_int(f'{p}->0')} and jsonb_typeof({p}->1) = 'string'"
        f" and (jsonb_typeof({p}->2) = 'null' or {_is_int(f'{p}->2')})"
        f" and jsonb_typeof({p}->3) = 'array' end"
    )


def _child_ok(c: str) -> str:
    return (
        f"case when jsonb_typeof({c}) is distinct from 'array' then false"
        f" when jsonb_array_length({c}) <> 3 then false"
        f" else {_is_int(f'{c}->0')} and jsonb_typeof({c}->1) in ('string', 'null')"
        f" and (jsonb_typeof({c}->2) = 'null' or {_is_int(f'{c}->2')}) end"
    )


def _tree_ok(t: str) -> str:
    return (
        f"not exists (select 1 from jsonb_array_elements({t}) p where"
        f" case when not ({_parent_ok('p')}) then true"
        f" else exists (select 1 from jsonb_array_elements(p->3) c"
        f" where not ({_child_ok('c')})) end)"
    )


def _blank(t: str) -> str:
    return (
        f"exists (select 1 from jsonb_array_elements({t}) p, jsonb_array_elements(p->3) c"
        " where jsonb_typeof(c->1) = 'null' or c->>1 = '')"
    )


_LEGACY_ENTRY_OK = (
    "coalesce(jsonb_typeof(e) = 'object' and "
    + _is_int("e->'trait_id'")
    + " and jsonb_typeof(e->'trait_name') = 'string' and "
    + _is_int("e->'parent_trait_id'")
    + ", false)"
)

SHAPE = f"""
case
  when s is null then 'missing'
  when jsonb_typeof(s) = 'array' then
    case when {_tree_ok("s")} then 'bare_array' else 'invalid' end
  when jsonb_typeof(s) <> 'object' then 'invalid'
  when s = '{{}}'::jsonb then 'empty_object'
  when s ? 'snapshot_at' then
    case when jsonb_typeof(s->'tags') = 'array'
          and not exists (select 1 from jsonb_array_elements(s->'tags') e
                          where not {_LEGACY_ENTRY_OK})
    then 'legacy_flat' else 'invalid' end
  when not (s ? 'tags') or (select count(*) from jsonb_object_keys(s)) <> 1 then 'invalid'
  when jsonb_typeof(s->'tags') <> 'array' then 'invalid'
  when not ({_tree_ok("s->'tags'")}) then 'invalid'
  when {_blank("s->'tags'")} then 'null_values'
  else 'envelope'
end
"""

ROWS_WITH_SHAPE = f"""
    select tp.id, tp.target_band_id, b.target_id, tp.matching_tags_snapshot, x.shape
    from target_populations tp
    join target_bands b on b.id = tp.target_band_id
    cross join lateral (select {SHAPE} as shape
                        from (select tp.matching_tags_snapshot as s) v) x
"""
BROKEN = ("bare_array", "legacy_flat", "empty_object", "null_values", "invalid")
CHECKSUM = "select md5(string_agg(t::text, ',' order by id)) from target_populations t"


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def url_of(db) -> str:
    return db.url.render_as_string(hide_password=False)


def expected_counts(conn, *, stale: bool = False) -> dict[int, dict]:
    """Per band: population, missing, broken, each broken shape (and stale), counted here.

    Shapes come from the SQL above; whether a row is broken (blank values only where the tag
    has a value now) or stale (up to tie order) from the Python reference.
    """
    verdict = judge(conn)
    out: dict[int, dict] = defaultdict(lambda: Counter())
    for pid, band_id, _target, _snap, shape in conn.execute(text(ROWS_WITH_SHAPE)):
        if verdict[pid] == "orphan":
            continue
        c = out[band_id]
        c["population"] += 1
        if verdict[pid] == "missing":
            c["missing"] += 1
        elif verdict[pid] == "broken":
            c["broken"] += 1
            c[shape] += 1
        elif verdict[pid] == "stale" and stale:
            c["stale"] += 1
    return out


def band_ids_of(conn, target_ids=None) -> list[int]:
    sql = "select b.id from target_bands b join targets t on t.id = b.target_id"
    if target_ids:
        sql += " where t.id = any(:t)"
    return list(conn.execute(text(sql), {"t": list(target_ids or [])}).scalars())


def rows_state(conn) -> dict[int, tuple[str | None, object]]:
    return {
        r[0]: (r[1], r[2])
        for r in conn.execute(
            text("select id, matching_tags_snapshot::text, updated_at from target_populations")
        )
    }


def largest_band(conn, target_id: int, *, with_missing: bool = False) -> int:
    """The target's band with the most populations (optionally: with NULL snapshots)."""
    where = " and tp.matching_tags_snapshot is null" if with_missing else ""
    return conn.execute(
        text(
            "select b.id from target_bands b join target_populations tp "
            f"on tp.target_band_id = b.id where b.target_id = :t{where} "
            "group by b.id order by count(*) desc, b.id limit 1"
        ),
        {"t": target_id},
    ).scalar_one()


def make_stale(conn, band_id: int, every: int = 7) -> int:
    """Edit the tags behind some well-formed snapshots of a band; returns the tags edited."""
    return conn.execute(
        text(
            """
            update me_file_tags mt set tag_value = coalesce(mt.tag_value, '') || ' (edited)'
            where mt.id in (
                select mt2.id from target_populations tp
                join me_file_tags mt2 on mt2.me_file_id = tp.me_file_id
                join trait_group_traits gt on gt.trait_id = mt2.trait_id
                join target_band_trait_groups g on g.trait_group_id = gt.trait_group_id
                     and g.target_band_id = tp.target_band_id
                where tp.target_band_id = :b and tp.id % :every = 0
                  and jsonb_typeof(tp.matching_tags_snapshot) = 'object'
                  and tp.matching_tags_snapshot ? 'tags')
            """
        ),
        {"b": band_id, "every": every},
    ).rowcount


def assert_scan_matches(result: bf.ScanResult, expected: dict[int, dict], *, stale: bool) -> None:
    assert result.rows, "the scan found no band"
    for row in result.rows:
        want = expected.get(row.band_id, Counter())
        assert row.population == want["population"], row
        assert row.missing == want["missing"], row
        assert row.broken == want["broken"], row
        assert dict(row.shapes) == {s: want[s] for s in BROKEN}, row
        assert row.stale == (want["stale"] if stale else None), row


# --- scan ------------------------------------------------------------------------------------


def test_demo_data_holds_every_shape(db):
    with db.engine.connect() as conn:
        shapes = Counter(shape for *_, shape in conn.execute(text(ROWS_WITH_SHAPE)))
        broken = Counter()
        for counts in expected_counts(conn).values():
            broken.update({k: v for k, v in counts.items() if k in BROKEN})
    assert set(shapes) == {"missing", "envelope", *BROKEN}, shapes
    assert set(broken) == set(BROKEN), broken


def test_scan_counts_equal_independent_sql(db):
    with db.engine.connect() as conn:
        expected = expected_counts(conn)
        result = bf.scan(conn)
        all_bands = band_ids_of(conn)
    assert result.include == {Category.MISSING, Category.BROKEN}
    assert sorted(r.band_id for r in result.rows) == sorted(all_bands)
    assert_scan_matches(result, expected, stale=False)
    totals = result.totals()
    assert totals["missing"] == sum(c["missing"] for c in expected.values()) > 0
    assert totals["broken"] == sum(c["broken"] for c in expected.values()) > 0
    assert result.rows_per_second and result.rows_per_second > 0


def test_scan_with_stale_equals_reference(fresh_db):
    with fresh_db.engine.begin() as conn:
        first, second = largest_band(conn, 2), largest_band(conn, 4)
        assert make_stale(conn, first) > 0
        assert make_stale(conn, second, every=11) > 0
    with fresh_db.engine.connect() as conn:
        expected = expected_counts(conn, stale=True)
        progress: list[tuple[int, int]] = []
        result = bf.scan(
            conn,
            include=bf.CATEGORIES,
            progress=lambda done, total, message: progress.append((done, total)),
        )
    assert_scan_matches(result, expected, stale=True)
    stale_bands = {r.band_id for r in result.rows if r.stale}
    assert first in stale_bands and second in stale_bands
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)
    assert progress[-1][0] == progress[-1][1] > 0


def test_scan_of_chosen_targets(db):
    with db.engine.connect() as conn:
        result = bf.scan(conn, [3, 1], include=["missing"], measure=False)
        wanted = band_ids_of(conn, [1, 3])
        expected = expected_counts(conn)
    assert sorted(r.band_id for r in result.rows) == sorted(wanted)
    assert {r.target_id for r in result.rows} == {1, 3}
    for r in result.rows:
        assert r.missing == expected[r.band_id]["missing"]
        assert r.broken is None and r.stale is None
    labels = [r.label for r in result.rows if r.target_id == 1]
    assert labels[0] == "Bullseye" and labels[1:] == [f"Ring {i}" for i in range(1, len(labels))]


def test_scan_refuses_unknown_targets(db):
    with db.engine.connect() as conn, pytest.raises(UsageError, match="target 999 does not"):
        bf.scan(conn, [1, 999])


def test_scan_cancel_between_steps(db):
    cancel = CancelFlag()
    steps: list[int] = []

    def progress(done, total, message):
        steps.append(done)
        if done:
            cancel.cancel()

    with db.engine.connect() as conn, pytest.raises(bf.ScanCancelled):
        bf.scan(conn, include=bf.CATEGORIES, cancel=cancel, progress=progress)
    assert len(steps) == 2  # the start, then the first band: no further step ran


def test_scan_cancel_interrupts_a_blocked_statement(db, db_url):
    """Cancel reaches a statement in flight: the scan waits on a lock here and still stops."""
    cancel = CancelFlag()
    outcome: list[object] = []

    def run():
        try:
            with db.engine.connect() as conn:
                outcome.append(bf.scan(conn, cancel=cancel))
        except Exception as exc:
            outcome.append(exc)

    with (
        psycopg.connect(libpq(db_url)) as locker,
        psycopg.connect(libpq(db_url), autocommit=True) as watcher,
    ):
        locker.execute("lock table target_populations in access exclusive mode")
        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 30
        while not watcher.execute(
            "select count(*) from pg_stat_activity where wait_event_type = 'Lock' "
            "and query like '%target_populations%' and pid <> pg_backend_pid()"
        ).fetchone()[0]:
            assert time.monotonic() < deadline, "the scan never reached the locked table"
            time.sleep(0.02)
        cancel.cancel()
        thread.join(10)
        assert not thread.is_alive(), "cancel did not stop the blocked statement"
        locker.rollback()
    assert len(outcome) == 1 and isinstance(outcome[0], bf.ScanCancelled)


# --- plan and estimate -------------------------------------------------------------------------


def test_categories_imply_what_their_mode_also_fixes():
    assert bf.effective_categories(["missing"]) == {Category.MISSING}
    assert bf.effective_categories(["broken"]) == {Category.MISSING, Category.BROKEN}
    assert bf.effective_categories(["stale"]) == set(bf.CATEGORIES)
    assert bf.implied_note(["missing", "broken"]) is None
    assert "repair" in bf.implied_note(["broken"])
    assert bf.parse_categories(["missing, Broken"]) == {Category.MISSING, Category.BROKEN}
    with pytest.raises(UsageError, match="unknown category 'nope'"):
        bf.parse_categories(["missing,nope"])
    with pytest.raises(UsageError):
        bf.parse_categories([""])


def _row(population=100, missing=0, broken=0, stale=0) -> bf.ScanRow:
    return bf.ScanRow(1, "t", 9, "Bullseye", population, missing, broken, stale)


def test_mode_follows_the_widest_category_with_rows():
    assert bf.mode_for(_row(missing=5, broken=3), ["missing"]) is Mode.MISSING
    assert bf.mode_for(_row(missing=5, broken=3), ["broken"]) is Mode.REPAIR
    assert bf.mode_for(_row(missing=5, broken=0), ["broken"]) is Mode.MISSING
    assert bf.mode_for(_row(missing=0, broken=3), ["missing"]) is None
    assert bf.mode_for(_row(missing=5, stale=1), ["stale"]) is Mode.FORCE
    assert bf.mode_for(_row(missing=5, stale=0), ["stale"]) is Mode.MISSING
    assert bf.rows_to_write(_row(missing=5, broken=3), Mode.REPAIR) == 8
    # force mode rebuilds the band's 100 rows but writes only those that change
    assert bf.rows_to_write(_row(missing=5, broken=3, stale=4), Mode.FORCE) == 12


def test_estimate_scales_with_rate_and_parallelism():
    large = GROUP_ROWS * 2
    rows = tuple(bf.ScanRow(1, "t", band, "Ring", large, large, 0, None) for band in range(1, 5))
    scan = bf.ScanResult(frozenset({Category.MISSING}), rows)
    one = bf.estimate_seconds(scan, 1000.0)
    assert one == pytest.approx(4 * (bf.BAND_OVERHEAD_SECONDS + large / 1000))
    assert bf.estimate_seconds(scan, 2000.0) < one
    assert bf.estimate_seconds(scan, 1000.0, parallel=4) == pytest.approx(one / 2)
    assert bf.estimate_seconds(scan, 1000.0, band_ids=[1]) == pytest.approx(one / 4)
    assert bf.estimate_seconds(scan, None) is None
    assert bf.estimate_seconds(scan, 1000.0, band_ids=[]) == 0.0


def test_small_bands_are_estimated_as_one_group_job():
    rows = tuple(bf.ScanRow(1, "t", band, "Ring", 10, 4, 0, None) for band in range(1, 1001))
    scan = bf.ScanResult(frozenset({Category.MISSING}), rows)
    assert bf.estimate_seconds(scan, 1000.0) == pytest.approx(bf.BAND_OVERHEAD_SECONDS + 4)
    assert bf.estimate_seconds(scan, 1000.0, parallel=4) == pytest.approx(
        bf.BAND_OVERHEAD_SECONDS + 4
    )


def test_measured_rate_is_a_real_measurement(db):
    with db.engine.connect() as conn:
        scan = bf.scan(conn, measure=False)
        plans = bf.plan(scan)
        rate = bf.measure_rate(conn, plans, sample_rows=600)
        assert bf.measure_rate(conn, []) is None
    assert scan.rows_per_second is None
    assert 10 < rate < 10_000_000


# --- runs ------------------------------------------------------------------------------------


def _run(database, include, target_ids=None, **options):
    with database.engine.connect() as conn:
        scan = bf.scan(conn, target_ids, bf.effective_categories(include), measure=False)
    return scan, run_backfill(database.engine, bf.plan(scan, include), **options)


def test_missing_only_leaves_broken_and_stale_rows_untouched(fresh_db):
    with fresh_db.engine.begin() as conn:
        stale_band = largest_band(conn, 2)
        make_stale(conn, stale_band)
    with fresh_db.engine.connect() as conn:
        before_counts = expected_counts(conn, stale=True)
        before = rows_state(conn)
    assert before_counts[stale_band]["stale"] > 0
    scan, outcomes = _run(fresh_db, ["missing"])
    assert outcomes and all(o.state is JobState.SUCCEEDED for o in outcomes)
    assert {o.mode for o in outcomes} == {Mode.MISSING}
    with fresh_db.engine.connect() as conn:
        after_counts = expected_counts(conn, stale=True)
        after = rows_state(conn)
    assert sum(c["missing"] for c in after_counts.values()) == 0
    for band_id, counts in before_counts.items():
        for key in ("broken", "stale", *BROKEN):
            assert after_counts[band_id][key] == counts[key], (band_id, key)
    for pid, (snap, updated_at) in before.items():
        if snap is not None:
            assert after[pid] == (snap, updated_at), pid
    for o in outcomes:
        assert o.fixed(Category.MISSING) == before_counts[o.band_id]["missing"]
        assert o.remaining(Category.MISSING) == 0
        assert o.fixed(Category.BROKEN) is None


def test_missing_and_broken_fix_both_and_keep_stale_rows(fresh_db):
    with fresh_db.engine.begin() as conn:
        stale_band = largest_band(conn, 2)
        make_stale(conn, stale_band)
    with fresh_db.engine.connect() as conn:
        before_counts = expected_counts(conn, stale=True)
        before = rows_state(conn)
        verdicts = judge(conn)
    scan, outcomes = _run(fresh_db, ["missing", "broken"])
    assert outcomes and all(o.state is JobState.SUCCEEDED for o in outcomes)
    with fresh_db.engine.connect() as conn:
        after_counts = expected_counts(conn, stale=True)
        after = rows_state(conn)
    assert sum(c["missing"] + c["broken"] for c in after_counts.values()) == 0
    assert after_counts[stale_band]["stale"] == before_counts[stale_band]["stale"] > 0
    for pid, (snap, updated_at) in before.items():
        if verdicts[pid] in ("good", "stale", "orphan"):  # outside the scope
            assert after[pid] == (snap, updated_at), pid
        else:
            assert after[pid][0] != snap, pid
    for o in outcomes:
        assert o.fixed(Category.MISSING) == before_counts[o.band_id]["missing"]
        assert o.fixed(Category.BROKEN) == before_counts[o.band_id]["broken"]
        assert o.rewritten_unchanged == 0
        assert o.rows_written == o.fixed(Category.MISSING) + o.fixed(Category.BROKEN)


def test_stale_rewrites_the_bands_with_stale_rows_and_nothing_else(fresh_db):
    target = 3
    with fresh_db.engine.begin() as conn:
        band = largest_band(conn, target)
        assert make_stale(conn, band) > 0
    with fresh_db.engine.connect() as conn:
        before_counts = expected_counts(conn, stale=True)
        before = rows_state(conn)
        band_of = dict(
            conn.execute(text("select id, target_band_id from target_populations")).all()
        )
        verdicts = judge(conn)
        chosen_bands = set(band_ids_of(conn, [target]))
    stale_bands = {b for b, c in before_counts.items() if c["stale"]}
    assert stale_bands & chosen_bands == {band}
    scan, outcomes = _run(fresh_db, ["stale"], target_ids=[target])
    modes = {o.band_id: o.mode for o in outcomes}
    assert modes[band] is Mode.FORCE
    assert Mode.FORCE not in {m for b, m in modes.items() if b != band}
    with fresh_db.engine.connect() as conn:
        after_counts = expected_counts(conn, stale=True)
        after = rows_state(conn)
        reference = reference_snapshots(conn, band)
        stored = dict(
            conn.execute(
                text(
                    "select id, matching_tags_snapshot from target_populations "
                    "where target_band_id = :b"
                ),
                {"b": band},
            ).all()
        )
    assert {o.band_id for o in outcomes} <= chosen_bands
    for band_id in chosen_bands:
        assert after_counts[band_id]["stale"] == 0
        assert after_counts[band_id]["missing"] == after_counts[band_id]["broken"] == 0
    for band_id in stale_bands - chosen_bands:  # stale rows of other targets: left alone
        assert after_counts[band_id]["stale"] == before_counts[band_id]["stale"]
    assert stored == reference
    force = next(o for o in outcomes if o.band_id == band)
    counts = before_counts[band]
    assert force.fixed(Category.STALE) == counts["stale"]
    # force mode writes only the rows whose snapshot changes (DOMAIN.md "Fixed point")
    assert force.rows_written == counts["stale"] + counts["missing"] + counts["broken"]
    assert force.rewritten_unchanged == 0
    for pid, (snap, updated_at) in before.items():
        band_id = band_of[pid]
        if band_id not in chosen_bands or verdicts[pid] in ("good", "orphan"):
            # other targets, and rows already right, also in the band run in force mode
            assert after[pid] == (snap, updated_at), pid
        elif band_id == band:
            assert after[pid][1] >= updated_at, pid


def test_run_band_with_nothing_to_fix_writes_nothing(fresh_db):
    with fresh_db.engine.begin() as conn:
        band = largest_band(conn, 1)
        conn.execute(
            text(
                "update target_populations set matching_tags_snapshot = '{\"tags\": []}' "
                "where target_band_id = :b"
            ),
            {"b": band},
        )
        for table in reference.CARRIERS:  # no offer or ad event left NULL either
            conn.execute(
                text(
                    f"update {table} set matching_tags_snapshot = '{{\"tags\": []}}' "
                    "where target_band_id = :b and matching_tags_snapshot is null"
                ),
                {"b": band},
            )
        before = rows_state(conn), reference.carriers(conn)
    outcome = bf.run_band(fresh_db.engine, band, ["missing", "broken"])
    assert outcome.mode is None and outcome.state is JobState.SUCCEEDED
    assert outcome.rows_written == 0 and outcome.fixed(Category.MISSING) == 0
    assert outcome.before.offers_left_null == 0
    with fresh_db.engine.connect() as conn:
        assert (rows_state(conn), reference.carriers(conn)) == before


def test_offers_left_null_alone_make_a_job_that_fills_them_and_nothing_else(fresh_db):
    with fresh_db.engine.begin() as conn:
        band = largest_band(conn, 1)
        conn.execute(
            text(
                "update target_populations set matching_tags_snapshot = '{\"tags\": []}' "
                "where target_band_id = :b"
            ),
            {"b": band},
        )
        before = rows_state(conn)
        carriers = reference.carriers(conn)
        left = reference.left_null(conn)
    assert left > 0, "the demo leaves some offers and ad events NULL"
    outcome = bf.run_band(fresh_db.engine, band, ["missing", "broken"])
    assert outcome.mode is Mode.MISSING and outcome.state is JobState.SUCCEEDED
    assert outcome.rows_written == 0
    assert outcome.before.offers_left_null > 0 and outcome.offers_remaining == 0
    assert outcome.offers_fixed == outcome.before.offers_left_null
    with fresh_db.engine.connect() as conn:
        assert rows_state(conn) == before
        assert reference.normalised(reference.carriers(conn)) == reference.normalised(
            reference.expected_carriers(carriers, conn, {band})
        )


def test_report_csv(fresh_db, tmp_path):
    scan, outcomes = _run(fresh_db, ["missing", "broken"], target_ids=[1])
    path = bf.report_csv(outcomes, tmp_path / "report.csv")
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == bf.REPORT_COLUMNS
    assert [int(r["band_id"]) for r in rows] == [o.band_id for o in outcomes]
    for r, o in zip(rows, outcomes, strict=True):
        assert r["state"] == "succeeded" and r["target_title"] == o.before.target_title
        assert int(r["missing_before"]) == o.before.missing
        assert int(r["missing_fixed"]) == o.fixed(Category.MISSING)
        assert int(r["broken_fixed"]) == o.fixed(Category.BROKEN)
        assert r["stale_before"] == r["stale_fixed"] == ""
        assert int(r["offers_left_null_before"]) == o.before.offers_left_null
        assert int(r["offers_left_null_fixed"]) == o.offers_fixed
        assert r["offers_left_null_remaining"] == "0"
        assert int(r["rows_written"]) == o.rows_written
        assert r["error"] == ""
    assert sum(int(r["offers_left_null_fixed"]) for r in rows) > 0


# --- command line ------------------------------------------------------------------------------


def checksum(url: str) -> str:
    with psycopg.connect(libpq(url)) as conn:
        return conn.execute(CHECKSUM).fetchone()[0]


def test_cli_dry_run_json_changes_nothing(db, db_url, capsys):
    before = checksum(db_url)
    code = main(["--dsn", db_url, "backfill", "--dry-run", "--json", "--include", "broken"])
    out = capsys.readouterr()
    assert code == 0
    assert checksum(db_url) == before
    report = json.loads(out.out)
    assert "broken includes missing" in out.err
    assert report["include"] == ["missing", "broken"]
    with db.engine.connect() as conn:
        expected = expected_counts(conn)
        left_null = reference.left_null(conn)
    assert report["totals"]["missing"] == sum(c["missing"] for c in expected.values())
    assert report["totals"]["broken"] == sum(c["broken"] for c in expected.values())
    assert report["totals"]["offers_left_null"] == left_null > 0
    assert sum(b["offers_left_null"] for b in report["bands"]) == left_null
    for band in report["bands"]:
        want = expected.get(band["band_id"], Counter())
        assert band["missing"] == want["missing"] and band["broken"] == want["broken"]
        assert band["broken_shapes"] == {s: want[s] for s in BROKEN}
        assert band["stale"] is None
        assert band["mode"] in ("missing", "repair", None)
    assert report["estimated_seconds"] is not None and report["rows_per_second"] > 0


def test_cli_dry_run_table(db_url, capsys):
    before = checksum(db_url)
    assert main(["--dsn", db_url, "backfill", "--dry-run", "--target", "2"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:6] == ["target", "band", "label", "population", "missing", "broken"]
    assert all(line.split()[0] == "2" for line in lines[2:-1])
    assert lines[-1].startswith("to fix:") and "estimated" in lines[-1]
    assert checksum(db_url) == before


def test_cli_yes_fixes_the_chosen_targets_only(create_db, demo_template, capsys):
    url = create_db("cli_yes", template=demo_template)
    state_sql = (
        "select tp.id, tp.matching_tags_snapshot::text, tp.updated_at, b.target_id "
        "from target_populations tp join target_bands b on b.id = tp.target_band_id"
    )
    with psycopg.connect(libpq(url)) as conn:
        before = {r[0]: r[1:] for r in conn.execute(state_sql)}
    code = main(["--dsn", url, "backfill", "--yes", "--target", "1", "2", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    report = json.loads(out.out)
    assert {r["state"] for r in report["results"]} == {"succeeded"}
    assert {r["target_id"] for r in report["results"]} == {1, 2}
    fixed = sum(r["fixed"]["missing"] + r["fixed"]["broken"] for r in report["results"])
    assert fixed == report["totals"]["missing"] + report["totals"]["broken"] > 0
    with psycopg.connect(libpq(url)) as conn:
        after = {r[0]: r[1:] for r in conn.execute(state_sql)}
        left = dict(
            conn.execute(
                f"select r.target_id, count(*) from ({ROWS_WITH_SHAPE}) r "
                "where r.shape <> 'envelope' group by 1"
            ).fetchall()
        )
    assert 1 not in left and 2 not in left
    assert left.get(3, 0) > 0
    for pid, (snap, updated_at, target) in before.items():
        if target not in (1, 2):
            assert after[pid] == (snap, updated_at, target), pid


def test_cli_yes_table_and_summary(create_db, demo_template, capsys):
    url = create_db("cli_table", template=demo_template)
    assert main(["--dsn", url, "backfill", "--yes", "--target", "4", "--include", "missing"]) == 0
    out = capsys.readouterr().out
    assert "missing fixed" in out and "total:" in out
    assert out.rstrip().endswith("bands succeeded")
    assert main(["--dsn", url, "backfill", "--dry-run", "--target", "4", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["totals"]["missing"] == 0 and again["totals"]["broken"] > 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--target", "999", "--dry-run"], "target 999 does not exist"),
        (["--target", "abc", "--dry-run"], "target id must be a whole number"),
        (["--include", "missing,bogus", "--dry-run"], "unknown category 'bogus'"),
        (["--include", ",", "--yes"], "choose at least one category"),
        (["--dry-run", "--workers", "0"], "at least 1"),
    ],
)
def test_cli_usage_errors_exit_2(db_url, capsys, argv, message):
    before = checksum(db_url)
    assert main(["--dsn", db_url, "backfill", *argv]) == 2
    assert message in capsys.readouterr().err
    assert checksum(db_url) == before


@pytest.mark.parametrize("argv", [[], ["--dry-run", "--yes"]])
def test_cli_needs_exactly_one_of_dry_run_and_yes(db_url, capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(["--dsn", db_url, "backfill", *argv])
    assert exit_info.value.code == 2
    assert "--dry-run" in capsys.readouterr().err


def test_cli_read_only_refuses_yes(db_url, capsys):
    assert main(["--dsn", db_url, "--read-only", "backfill", "--yes"]) == 2
    assert "read-only" in capsys.readouterr().err
    assert main(["--dsn", db_url, "--read-only", "backfill", "--dry-run"]) == 0


class Killer:
    """Terminates every connection of a band job, again and again, until stopped."""

    def __init__(self, url: str, band_id: int) -> None:
        self.url, self.band_id = libpq(url), band_id
        self.stop = threading.Event()
        self.killed = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                row = conn.execute(
                    "select count(pg_terminate_backend(pid)) from pg_stat_activity "
                    "where application_name = %s",
                    (f"qsnap band {self.band_id}",),
                ).fetchone()
                self.killed += row[0]
                self.stop.wait(0.02)

    def __enter__(self) -> Killer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(10)


def test_cli_exit_1_when_a_band_fails(create_db, demo_template, capsys, monkeypatch):
    # every band its own job (small bands otherwise share one group job and fail together)
    monkeypatch.setattr(runner, "GROUP_ROWS", 0)
    url = create_db("cli_fail", template=demo_template)
    target = 3
    with psycopg.connect(libpq(url)) as blocker:
        band = blocker.execute(
            "select b.id from target_bands b join target_populations tp "
            "on tp.target_band_id = b.id where b.target_id = %s "
            "and tp.matching_tags_snapshot is null group by b.id order by b.id limit 1",
            (target,),
        ).fetchone()[0]
        bands = blocker.execute(
            "select count(*) from target_bands where target_id = %s", (target,)
        ).fetchone()[0]
        # the band job blocks on these rows, so the killer always finds it mid-run
        blocker.execute(
            "select id from target_populations where target_band_id = %s "
            "and matching_tags_snapshot is null order by id limit 3 for update",
            (band,),
        )
        with Killer(url, band) as killer:
            code = main(["--dsn", url, "backfill", "--yes", "--target", str(target)])
        blocker.rollback()
    out = capsys.readouterr().out
    assert code == 1
    assert killer.killed >= 3
    assert f"band {band}: failed" in out and "lost the database connection" in out
    assert f"{bands - 1} of {bands} bands succeeded" in out


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_sums_up_many_bands_on_one_line_and_shows_the_last_state_at_the_end():
    from qsnap_gui.cli.output import ProgressPrinter
    from qsnap_gui.domain.jobs import Progress

    stream = _Terminal()
    printer = ProgressPrinter(stream)
    for band in range(1, 7):
        printer(Progress(band, JobState.RUNNING, rows_done=0, rows_total=10, batch=0, batches=1))
    for band in range(1, 7):
        printer(Progress(band, JobState.SUCCEEDED, rows_done=10, rows_total=10, batch=1, batches=1))
    printer.done()
    last = stream.getvalue().split("\r\033[K")[-1]
    assert last == "6 bands [##########] 100%: 6 ended, 60/60 rows\n"
