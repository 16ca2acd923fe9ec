"""The band snapshot engine against the Python reference, crashes, locks and retries."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, text

from qsnap_gui.engine import snapshot_sql
from qsnap_gui.engine.flows import snapshot_bands
from qsnap_gui.engine.snapshot_sql import snapshot_select_sql
from qsnap_gui.engine.snapshots import BandResult, CancelFlag, JobState, Mode, snapshot_band
from qsnap_gui.store import locks
from qsnap_gui.store.db import open_database
from tests.worlds import (
    World,
    block_band_row,
    job_waiting_on_lock,
    load_world,
    reference_snapshots,
    stored_snapshots,
)


def band_ids(db) -> list[int]:
    with db.engine.connect() as conn:
        return list(conn.execute(text("select id from target_bands order by id")).scalars())


def count_null(db, band_id: int) -> int:
    with db.engine.connect() as conn:
        return conn.execute(
            text(
                "select count(*) from target_populations "
                "where target_band_id = :b and matching_tags_snapshot is null"
            ),
            {"b": band_id},
        ).scalar_one()


def test_force_mode_matches_reference_on_demo_data(fresh_db):
    db = fresh_db
    results = snapshot_bands(db.engine, band_ids(db), mode=Mode.FORCE)
    assert {r.state for r in results} == {JobState.SUCCEEDED}
    assert sum(r.rows_written for r in results) > 1000
    with db.engine.connect() as conn:
        for band_id in band_ids(db):
            assert stored_snapshots(conn, band_id) == reference_snapshots(conn, band_id)


def test_missing_mode_fills_nulls_then_writes_nothing(db_url):
    db = open_database(db_url)
    with db.engine.begin() as conn:
        conn.execute(
            text("update target_populations set matching_tags_snapshot = null where id % 3 = 0")
        )
        before = dict(
            conn.execute(
                text(
                    "select id, updated_at from target_populations "
                    "where matching_tags_snapshot is not null"
                )
            ).all()
        )
    bands = band_ids(db)
    first = snapshot_bands(db.engine, bands)
    assert sum(r.rows_written for r in first) > 0
    assert all(count_null(db, b) == 0 for b in bands)
    second = snapshot_bands(db.engine, bands)
    assert [r.rows_written for r in second] == [0] * len(bands)
    with db.engine.connect() as conn:
        after = dict(
            conn.execute(
                text("select id, updated_at from target_populations where id = any(:ids)"),
                {"ids": list(before)},
            ).all()
        )
    assert after == before
    db.dispose()


def test_repair_mode_rewrites_every_broken_shape_and_nothing_else(fresh_db):
    db = fresh_db
    from qsnap_gui.domain.codec import Shape, decode

    with db.engine.connect() as conn:
        rows = conn.execute(
            text("select id, matching_tags_snapshot, updated_at from target_populations")
        ).all()
    shapes = {r[0]: decode(r[1]).shape for r in rows}
    assert {Shape.BARE_ARRAY, Shape.LEGACY_FLAT, Shape.EMPTY_OBJECT, Shape.NULL_VALUES} <= set(
        shapes.values()
    ), "the demo data should hold every broken shape"
    good = {r[0]: (r[1], r[2]) for r in rows if shapes[r[0]] is Shape.ENVELOPE}
    results = snapshot_bands(db.engine, band_ids(db), mode=Mode.REPAIR)
    broken = sum(1 for s in shapes.values() if s is not Shape.ENVELOPE)
    assert sum(r.rows_written for r in results) == broken
    with db.engine.connect() as conn:
        after = conn.execute(
            text("select id, matching_tags_snapshot, updated_at from target_populations")
        ).all()
    assert {decode(r[1]).shape for r in after} == {Shape.ENVELOPE}
    assert {r[0]: (r[1], r[2]) for r in after if r[0] in good} == good


def test_nothing_matching_is_an_empty_list_not_null(empty_db_url):
    db = open_database(empty_db_url, check_schema=False)
    world = World(
        traits=[(1, "Pets", 1, None), (2, "Dog", 1, 1), (3, "Cat", 2, 1)],
        me_files=[10, 11],
        tags=[(10, 2, "Dog"), (11, 99, "gone trait")],
        groups={1: [2, 3]},
        bands=[(5, 1, True, [1])],
        populations=[(5, 10), (5, 11)],
    )
    load_world(db.engine, world)
    result = snapshot_band(db.engine, 5)
    assert result.state is JobState.SUCCEEDED and result.rows_written == 2
    with db.engine.connect() as conn:
        stored = dict(
            conn.execute(
                text("select me_file_id, matching_tags_snapshot from target_populations")
            ).all()
        )
    assert stored == {10: {"tags": [[1, "Pets", 1, [[2, "Dog", 1]]]]}, 11: {"tags": []}}
    assert snapshot_band(db.engine, 5).rows_written == 0
    db.dispose()


# --- hypothesis: small worlds with every awkward case -----------------------------------------

values = st.sampled_from(["a", "", None, "O'Neil", '100% \\ "q"', "\U0001f389", "02140"])
orders = st.integers(0, 3)  # display_order is NOT NULL in production


@st.composite
def worlds(draw) -> World:
    parents = draw(st.integers(1, 4))
    traits = [(p, f"P{p}", draw(orders), None) for p in range(1, parents + 1)]
    next_id = 10
    for _ in range(draw(st.integers(1, 10))):
        parent = draw(st.sampled_from([*range(1, parents + 1), 777]))
        traits.append((next_id, f"C{next_id}", draw(orders), parent))
        next_id += 1
    trait_ids = [t[0] for t in traits] + [888]
    groups = {
        g: draw(st.lists(st.sampled_from(trait_ids), max_size=5, unique=True)) for g in (1, 2, 3)
    }
    me_files = list(range(100, 100 + draw(st.integers(1, 6))))
    tags = draw(
        st.lists(
            st.tuples(st.sampled_from(me_files), st.sampled_from(trait_ids), values), max_size=30
        )
    )
    band_groups = draw(st.lists(st.sampled_from([1, 2, 3]), min_size=0, max_size=3, unique=True))
    return World(
        traits=traits,
        me_files=me_files,
        tags=tags,
        groups=groups,
        bands=[(50, 1, True, band_groups)],
        populations=[(50, m) for m in me_files],
    )


@pytest.fixture(scope="module")
def scratch(create_db):
    db = open_database(create_db("worlds"), check_schema=False)
    yield db
    db.dispose()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(world=worlds())
def test_sql_equals_reference_on_generated_worlds(scratch, world):
    load_world(scratch.engine, world)
    result = snapshot_band(scratch.engine, 50, mode=Mode.FORCE, batch_size=2)
    assert result.state is JobState.SUCCEEDED
    with scratch.engine.connect() as conn:
        assert stored_snapshots(conn, 50) == reference_snapshots(conn, 50)


# --- crashes, locks, retries -------------------------------------------------------------------


def biggest_band(db) -> int:
    with db.engine.connect() as conn:
        return conn.execute(
            text(
                "select target_band_id from target_populations group by 1 "
                "order by count(*) desc limit 1"
            )
        ).scalar_one()


def emptied_biggest_band(db) -> int:
    """The largest band, its snapshots set back to NULL."""
    band = biggest_band(db)
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "update target_populations set matching_tags_snapshot = null "
                "where target_band_id = :b"
            ),
            {"b": band},
        )
    return band


def written_versions(db, band: int) -> dict[int, str]:
    """id -> row version (xmin) of every row of the band that holds a snapshot."""
    with db.engine.connect() as conn:
        return dict(
            conn.execute(
                text(
                    "select id, xmin::text from target_populations where target_band_id = :b "
                    "and matching_tags_snapshot is not null"
                ),
                {"b": band},
            ).all()
        )


def assert_none_rewritten_and_band_correct(db, band: int, done: dict[int, str]) -> None:
    with db.engine.connect() as conn:
        again = dict(
            conn.execute(
                text("select id, xmin::text from target_populations where id = any(:ids)"),
                {"ids": list(done)},
            ).all()
        )
        assert again == done, "rows committed before the kill were written again"
        assert stored_snapshots(conn, band) == reference_snapshots(conn, band)


def qsnap(*args: str) -> list[str]:
    return [sys.executable, "-m", "qsnap_gui.cli", *args]


def test_sigkill_mid_band_then_rerun_finishes_without_rewriting(db_url):
    db = open_database(db_url)
    band = emptied_biggest_band(db)
    proc = subprocess.Popen(
        qsnap("--dsn", db_url, "snapshot", "--band", str(band), "--batch-size", "10"),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    for line in proc.stderr:
        match = re.search(r"batch (\d+)/", line)
        if match and int(match.group(1)) >= 5:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = written_versions(db, band)
    assert 50 <= len(done) < count_null(db, band) + len(done)
    rerun = subprocess.run(
        qsnap("--dsn", db_url, "snapshot", "--band", str(band)), capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr
    assert_none_rewritten_and_band_correct(db, band, done)
    db.dispose()


def test_two_processes_on_one_band_both_succeed(db_url):
    db = open_database(db_url)
    band = emptied_biggest_band(db)
    procs = [
        subprocess.Popen(
            qsnap("--dsn", db_url, "snapshot", "--band", str(band), "--batch-size", "50"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    with db.engine.connect() as conn:
        assert stored_snapshots(conn, band) == reference_snapshots(conn, band)
    written = sorted(int(o[0].split("total: ")[1].split()[0]) for o in outputs)
    assert written[0] == 0 and written[1] == len(reference_snapshots(db.engine.connect(), band))
    db.dispose()


def test_waits_for_a_band_locked_elsewhere(db):
    band = band_ids(db)[0]
    seen: list[JobState] = []
    with db.engine.connect() as holder:
        assert locks.try_lock(holder, locks.BAND, band)
        holder.commit()
        waiting = threading.Event()

        def progress(p):
            seen.append(p.state)
            if p.state is JobState.WAITING:
                waiting.set()

        results = []
        worker = threading.Thread(
            target=lambda: results.append(snapshot_band(db.engine, band, progress=progress))
        )
        worker.start()
        assert waiting.wait(120)
        assert worker.is_alive()
        locks.unlock(holder, locks.BAND, band)
        holder.commit()
        worker.join(300)
    assert results[0].state is JobState.SUCCEEDED
    assert seen[0] is JobState.WAITING and seen[-1] is JobState.SUCCEEDED


def _wait_until(predicate, timeout: float = 120.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        threading.Event().wait(0.05)
    raise AssertionError("condition not reached")


def _terminate(db, pid: int) -> None:
    with db.engine.connect() as conn:
        conn.execute(text("select pg_terminate_backend(:p)"), {"p": pid})


def test_terminated_connection_is_retried_and_band_ends_correct(db_url):
    db = open_database(db_url)
    band = emptied_biggest_band(db)
    results = []
    with db.engine.connect() as blocker:
        block_band_row(blocker, band, 120)
        worker = threading.Thread(
            target=lambda: results.append(
                snapshot_band(db.engine, band, batch_size=50, backoff=0.05)
            )
        )
        worker.start()
        _terminate(db, _wait_until(lambda: job_waiting_on_lock(db.engine, band)))
        _wait_until(lambda: job_waiting_on_lock(db.engine, band))
        blocker.rollback()
    worker.join(300)
    result = results[0]
    assert result.state is JobState.SUCCEEDED and result.attempts == 2
    with db.engine.connect() as conn:
        assert stored_snapshots(conn, band) == reference_snapshots(conn, band)
    db.dispose()


def terminate_every_attempt(db, band: int, **options) -> tuple[BandResult, int]:
    """Run a band job (batches of 50) against a locked row, terminating each attempt's
    session while it waits; returns the result and the locked row's id."""
    results = []
    with db.engine.connect() as blocker:
        blocked_id = block_band_row(blocker, band, 120)
        worker = threading.Thread(
            target=lambda: results.append(
                snapshot_band(db.engine, band, batch_size=50, backoff=0.05, **options)
            )
        )
        worker.start()
        ended: set[int] = set()
        for _ in range(3):
            # the next attempt's session, not the one just terminated and still listed
            pid = _wait_until(
                lambda: (p := job_waiting_on_lock(db.engine, band)) not in ended and p
            )
            _terminate(db, pid)
            ended.add(pid)
        worker.join(300)
        blocker.rollback()
    return results[0], blocked_id


def test_terminated_on_every_attempt_fails_with_cause_and_keeps_committed_batches(db_url):
    db = open_database(db_url)
    band = emptied_biggest_band(db)
    result, blocked_id = terminate_every_attempt(db, band)
    assert result.state is JobState.FAILED and result.attempts == 3
    assert f"band {band}" in result.error and "connection" in result.error
    with db.engine.connect() as conn:
        filled = conn.execute(
            text(
                "select count(*) filter (where matching_tags_snapshot is not null and id < :x), "
                "count(*) filter (where matching_tags_snapshot is not null and id >= :x), "
                "count(*) filter (where id < :x) "
                "from target_populations where target_band_id = :b"
            ),
            {"b": band, "x": blocked_id},
        ).one()
    assert filled[1] == 0, "nothing at or after the blocked batch may be written"
    assert filled[0] == 100 == filled[2] - 20
    db.dispose()


def cancel_while_blocked(db, band: int, **options) -> BandResult:
    """Cancel a band job (batches of 50) while it waits on a row lock: the wait is interrupted,
    so the job ends while the lock is still held."""
    cancel = CancelFlag()
    results = []
    with db.engine.connect() as blocker:
        block_band_row(blocker, band, 120)
        worker = threading.Thread(
            target=lambda: results.append(
                snapshot_band(db.engine, band, batch_size=50, cancel=cancel, **options)
            )
        )
        worker.start()
        _wait_until(lambda: job_waiting_on_lock(db.engine, band))
        cancel.cancel()
        worker.join(300)
        assert not worker.is_alive(), "the cancel did not end the job blocked on a lock"
        blocker.rollback()
    return results[0]


def test_cancel_between_batches_keeps_committed_rows(db_url):
    db = open_database(db_url)
    band = emptied_biggest_band(db)
    results = [cancel_while_blocked(db, band)]
    assert results[0].state is JobState.CANCELLED
    assert results[0].rows_written == 100  # the two batches before the locked row
    assert snapshot_band(db.engine, band).state is JobState.SUCCEEDED
    with db.engine.connect() as conn:
        assert stored_snapshots(conn, band) == reference_snapshots(conn, band)
    db.dispose()


# --- large bands: the lookup form and the relay to several writers ------------------------------


def test_lookup_form_equals_the_planners_form_on_every_band(db, monkeypatch):
    """Reading tags me_file by me_file builds byte-identical snapshots, whether a band looks up
    only its own traits' tags (few traits) or every tag of the me_file (many)."""
    compared = 0
    few_traits = 0
    default = snapshot_sql.LOOKUP_TRAITS
    with db.engine.connect() as conn:
        for band in band_ids(db):
            rows_sql = "select id, me_file_id from target_populations where target_band_id = :b"
            forms = []
            for lookup, most_traits in ((False, default), (True, default), (True, 0)):
                monkeypatch.setattr(snapshot_sql, "LOOKUP_TRAITS", most_traits)
                built = conn.execute(
                    text(snapshot_select_sql(rows_sql, lookup=lookup, as_text=True)),
                    {"b": band, "band": band},
                )
                forms.append(dict(built.all()))
            assert forms[0] == forms[1] == forms[2]
            traits = conn.execute(text(snapshot_sql.BAND_TRAITS_SQL), {"band": band}).all()
            few_traits += 0 < len(traits) <= default
            reference = reference_snapshots(conn, band)
            assert {k: json.loads(v) for k, v in forms[1].items()} == reference
            compared += len(reference)
    assert compared > 1000
    assert few_traits > 0


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(world=worlds())
def test_relayed_writers_with_lookups_equal_reference_on_generated_worlds(
    scratch, world, monkeypatch
):
    load_world(scratch.engine, world)
    with scratch.engine.begin() as conn:
        conn.execute(text("analyze me_files"))
    monkeypatch.setattr(snapshot_sql, "LOOKUP_SHARE", 1e9)
    result = snapshot_band(scratch.engine, 50, mode=Mode.FORCE, batch_size=2, split_rows=1)
    assert result.state is JobState.SUCCEEDED
    with scratch.engine.connect() as conn:
        assert stored_snapshots(conn, 50) == reference_snapshots(conn, 50)


def test_large_band_is_written_by_two_connections_in_whole_batches(fresh_db):
    db = fresh_db
    band = emptied_biggest_band(db)
    total = count_null(db, band)
    seen: list[tuple[str, int, int, int]] = []

    def progress(p):
        if p.state is JobState.RUNNING and p.batch:
            seen.append((threading.current_thread().name, p.batch, p.batches, p.rows_done))

    invalidated: list[BaseException | None] = []
    event.listen(db.engine.pool, "invalidate", lambda _c, _r, exc: invalidated.append(exc))
    result = snapshot_band(db.engine, band, batch_size=25, split_rows=1, progress=progress)
    assert result.state is JobState.SUCCEEDED and result.rows_written == total
    # every connection went back to the pool clean (the coordinator once kept streaming on)
    assert invalidated == []
    assert result.batches == -(-total // 25) == len(seen)
    assert {name for name, *_ in seen} == {
        f"qsnap band {band} writer 1",
        f"qsnap band {band} writer 2",
    }
    assert [b for _, b, _, _ in seen] == list(range(1, len(seen) + 1))
    assert seen[-1][3] == total and all(n == result.batches for _, _, n, _ in seen)
    with db.engine.connect() as conn:
        assert stored_snapshots(conn, band) == reference_snapshots(conn, band)


def test_relay_failing_writer_stops_the_band_and_leaves_only_correct_rows(db_url):
    db = open_database(db_url)
    band = emptied_biggest_band(db)
    result, blocked_id = terminate_every_attempt(db, band, split_rows=1)
    assert result.state is JobState.FAILED and result.attempts == 3
    assert f"band {band}: lost the database connection" in result.error
    with db.engine.connect() as conn:
        stored = stored_snapshots(conn, band)
        reference = reference_snapshots(conn, band)
    written = {k: v for k, v in stored.items() if v is not None}
    assert stored[blocked_id] is None and written
    assert len(written) == result.rows_written
    assert all(v == reference[k] for k, v in written.items())
    assert not job_waiting_on_lock(db.engine, band)
    db.dispose()


def test_relay_cancel_keeps_what_was_written_and_a_rerun_completes(db_url):
    db = open_database(db_url)
    band = emptied_biggest_band(db)
    results = [cancel_while_blocked(db, band, split_rows=1)]
    assert results[0].state is JobState.CANCELLED
    kept = count_null(db, band)
    with db.engine.connect() as conn:
        total = len(stored_snapshots(conn, band))
    assert 0 < results[0].rows_written == total - kept
    assert snapshot_band(db.engine, band, split_rows=1).rows_written == kept
    with db.engine.connect() as conn:
        assert stored_snapshots(conn, band) == reference_snapshots(conn, band)
    db.dispose()


KILLABLE_RELAY = """
import sys
from qsnap_gui.store.db import open_database
from qsnap_gui.engine.snapshots import snapshot_band
db = open_database(sys.argv[1])
snapshot_band(db.engine, int(sys.argv[2]), batch_size=10, split_rows=1,
              progress=lambda p: print(p.batch, flush=True))
"""


def test_sigkill_mid_relay_then_rerun_rewrites_nothing(db_url):
    db = open_database(db_url)
    band = emptied_biggest_band(db)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLABLE_RELAY, db_url, str(band)],
        stdout=subprocess.PIPE,
        text=True,
    )
    for line in proc.stdout:
        if int(line) >= 8:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = written_versions(db, band)
    assert len(done) >= 80 and count_null(db, band) > 0
    assert snapshot_band(db.engine, band).state is JobState.SUCCEEDED
    assert_none_rewritten_and_band_correct(db, band, done)
    db.dispose()


def test_a_batch_write_finds_its_rows_by_id_when_statistics_say_nulls_are_few(fresh_db):
    """Right after a refresh the statistics still count almost no NULL snapshot: the write
    must look its batch's rows up by id, not read every NULL row and hash them."""
    engine = fresh_db.engine
    with engine.connect() as conn:
        conn.execute(text("analyze target_populations"))
        conn.commit()
        band = conn.execute(
            text("select target_band_id from target_populations group by 1 order by count(*) desc")
        ).first()[0]
        conn.execute(
            text(
                "update target_populations set matching_tags_snapshot = null "
                "where target_band_id = :b"
            ),
            {"b": band},
        )
        ids = (
            conn.execute(
                text(
                    "select id from target_populations where target_band_id = :b order by id limit 5"
                ),
                {"b": band},
            )
            .scalars()
            .all()
        )
        params = {
            "ids": "{" + ",".join(map(str, ids)) + "}",
            "snaps": "{" + ",".join(['"{\\"tags\\": []}"'] * len(ids)) + "}",
            "band": band,
        }
        sql = snapshot_sql.write_sql(engine, Mode.MISSING)
        plan = conn.execute(text("explain (format json) " + sql), params).scalar()
        conn.rollback()

    def scans(node: dict):
        if node.get("Relation Name") == "target_populations":
            yield node
        for child in node.get("Plans", []):
            yield from scans(child)

    found = [n for n in scans(plan[0]["Plan"]) if n["Node Type"] != "ModifyTable"]
    assert found, plan
    assert all("ANY" in n.get("Index Cond", "") for n in found), found


def test_a_cancel_after_the_work_left_interrupt_on_touches_no_statement(db):
    """Leaving ``interrupt_on`` does not wait for its watcher; a flag set afterwards must still
    cancel nothing, as the connection may already run someone else's statement."""
    from qsnap_gui.store.interrupt import interrupt_on

    flag = CancelFlag()
    with db.engine.connect() as conn:
        with interrupt_on(flag, [conn]):
            assert conn.execute(text("select 1")).scalar() == 1
        flag.cancel()
        assert conn.execute(text("select pg_sleep(0.5) is null")).scalar() is False
