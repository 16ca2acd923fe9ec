"""Refresh Population: SQL membership against a set-based Python reference, the diff, the flow."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from qsnap_gui.domain.errors import TargetBusy
from qsnap_gui.engine import population
from qsnap_gui.engine.flows import refresh_population
from qsnap_gui.engine.population import (
    RefreshFlow,
    apply_membership,
    depopulate,
)
from qsnap_gui.engine.snapshots import GROUP_SESSION, JobState
from qsnap_gui.engine.targets import list_targets
from qsnap_gui.store.db import open_database
from tests.reference import membership as reference_membership
from tests.worlds import (
    World,
    job_waiting_on_lock,
    load_world,
    reference_snapshots,
    stored_snapshots,
)


def memberships(conn, target_id: int) -> dict[int, int]:
    return dict(
        conn.execute(
            text(
                "select tp.me_file_id, tp.target_band_id from target_populations tp "
                "join target_bands b on b.id = tp.target_band_id where b.target_id = :t"
            ),
            {"t": target_id},
        ).all()
    )


def target_ids(conn) -> list[int]:
    return list(conn.execute(text("select id from targets order by id")).scalars())


def test_sql_membership_equals_reference_on_demo_data(fresh_db):
    with fresh_db.engine.begin() as conn:
        for target_id in target_ids(conn):
            apply_membership(conn, target_id)
            assert memberships(conn, target_id) == reference_membership(conn, target_id)
            assert memberships(conn, target_id), "each demo target should have members"


@st.composite
def target_worlds(draw) -> World:
    traits = [(1, "P", 1, None)] + [(t, f"C{t}", t, 1) for t in range(2, 9)]
    groups = {g: draw(st.lists(st.integers(2, 9), max_size=3, unique=True)) for g in range(1, 6)}
    me_files = list(range(100, 100 + draw(st.integers(1, 8))))
    tags = draw(
        st.lists(
            st.tuples(st.sampled_from([*me_files, 999]), st.integers(2, 9), st.just("v")),
            max_size=40,
        )
    )
    nbands = draw(st.integers(1, 4))
    bands = []
    for b in range(nbands):
        # group 6 has no trait_groups row: a link to it is ignored, as the application does
        gids = draw(st.lists(st.integers(1, 6), max_size=4, unique=True))
        bands.append((10 + b, 1, b == nbands - 1, gids))
    existing = draw(
        st.lists(
            st.tuples(st.sampled_from([b[0] for b in bands]), st.sampled_from(me_files)),
            max_size=6,
            unique_by=lambda p: p,
        )
    )
    return World(
        traits=traits,
        me_files=me_files,
        tags=tags,
        groups=groups,
        bands=bands,
        populations=existing,
    )


@pytest.fixture(scope="module")
def scratch(create_db):
    db = open_database(create_db("popworlds"), check_schema=False)
    yield db
    db.dispose()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(world=target_worlds())
def test_sql_membership_equals_reference_on_generated_worlds(scratch, world):
    check_membership_world(scratch, world)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(world=target_worlds())
def test_membership_of_targets_with_too_many_groups_for_a_mask(scratch, world, monkeypatch):
    """Targets with more than 62 trait groups take the counting query; it must agree."""
    monkeypatch.setattr(population, "MASK_BITS", 0)
    check_membership_world(scratch, world)


def check_membership_world(scratch, world: World) -> None:
    load_world(scratch.engine, world)
    with scratch.engine.begin() as conn:
        before = {(b, m) for b, m in world.populations}
        expected = reference_membership(conn, 1)
        diff = apply_membership(conn, 1)
        assert memberships(conn, 1) == expected
        after = {(b, m) for m, b in expected.items()}
        assert diff.inserted == len(after - before)
        assert diff.deleted == len(before - after)
        assert diff.kept == len(after & before)
        moved = {m for _, m in before - after} & {m for _, m in after - before}
        assert diff.moved == len(moved)


def rows(conn, target_id: int) -> dict[int, tuple]:
    return {
        r[0]: tuple(r[1:])
        for r in conn.execute(
            text(
                "select tp.id, tp.target_band_id, tp.me_file_id, tp.matching_tags_snapshot::text, "
                "tp.updated_at from target_populations tp join target_bands b "
                "on b.id = tp.target_band_id where b.target_id = :t"
            ),
            {"t": target_id},
        )
    }


def test_refresh_keeps_unchanged_rows_and_moves_changed_me_files(fresh_db):
    engine = fresh_db.engine
    first = refresh_population(engine, 1)
    assert first.status == "populated" and not first.failed
    with engine.connect() as conn:
        snapshot_before = rows(conn, 1)
        assert all(r[2] is not None for r in snapshot_before.values())
    again = refresh_population(engine, 1)
    assert again.diff.inserted == again.diff.deleted == 0
    with engine.connect() as conn:
        assert rows(conn, 1) == snapshot_before
        bullseye_member, bullseye = conn.execute(
            text(
                "select tp.me_file_id, tp.target_band_id from target_populations tp "
                "join target_bands b on b.id = tp.target_band_id "
                "where b.target_id = 1 and b.is_bullseye = '1' order by tp.id limit 1"
            )
        ).one()
        leaver = conn.execute(
            text(
                "select tp.me_file_id from target_populations tp join target_bands b "
                "on b.id = tp.target_band_id where b.target_id = 1 and tp.me_file_id <> :m "
                "order by tp.id limit 1"
            ),
            {"m": bullseye_member},
        ).scalar_one()
    with engine.begin() as conn:
        # the bullseye member loses every tag that only the bullseye's groups ask for
        conn.execute(
            text(
                "delete from me_file_tags where me_file_id = :m and trait_id in ("
                "select gt.trait_id from target_band_trait_groups g join trait_group_traits gt "
                "on gt.trait_group_id = g.trait_group_id where g.target_band_id = :b) "
                "and trait_id not in (select gt.trait_id from target_band_trait_groups g "
                "join trait_group_traits gt on gt.trait_group_id = g.trait_group_id "
                "join target_bands tb on tb.id = g.target_band_id "
                "where tb.target_id = 1 and tb.id <> :b)"
            ),
            {"m": bullseye_member, "b": bullseye},
        )
        conn.execute(text("delete from me_file_tags where me_file_id = :m"), {"m": leaver})
    result = refresh_population(engine, 1)
    assert result.diff.moved == 1 and result.diff.deleted == 2 and result.diff.inserted == 1
    with engine.connect() as conn:
        now = memberships(conn, 1)
        assert leaver not in now
        assert now[bullseye_member] != bullseye
        new_row = conn.execute(
            text(
                "select matching_tags_snapshot from target_populations "
                "where me_file_id = :m and target_band_id = :b"
            ),
            {"m": bullseye_member, "b": now[bullseye_member]},
        ).scalar_one()
        assert (
            new_row
            == reference_snapshots(conn, now[bullseye_member])[
                conn.execute(
                    text(
                        "select id from target_populations where me_file_id = :m "
                        "and target_band_id = :b"
                    ),
                    {"m": bullseye_member, "b": now[bullseye_member]},
                ).scalar_one()
            ]
        )
        status = conn.execute(
            text("select population_status, last_populated_at from targets where id = 1")
        ).one()
    assert status[0] == "populated" and status[1] is not None


def test_failed_band_job_still_ends_populated_and_cli_exits_1(fresh_db):
    """The refresh's bands run as one group: its sessions killed fail every band, and the
    target still ends populated."""
    engine = fresh_db.engine
    url = fresh_db.url.render_as_string(hide_password=False)
    with engine.begin() as conn:
        conn.execute(text("update target_populations set matching_tags_snapshot = null"))
        band = conn.execute(
            text("select id from target_bands where target_id = 1 order by id limit 1")
        ).scalar_one()
    stop = threading.Event()

    def terminator():
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            while not stop.is_set():
                conn.execute(
                    text(
                        "select pg_terminate_backend(pid) from pg_stat_activity "
                        "where application_name in (:a, :group)"
                    ),
                    {"a": f"qsnap band {band}", "group": GROUP_SESSION},
                )
                stop.wait(0.002)

    killer = threading.Thread(target=terminator)
    killer.start()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "qsnap_gui.cli", "--dsn", url, "populate", "1"],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        stop.set()
        killer.join()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"band {band}: failed" in proc.stdout
    assert "lost the database connection" in proc.stdout
    with engine.connect() as conn:
        assert conn.execute(
            text("select population_status from targets where id = 1")
        ).scalar() == ("populated")
        assert (
            conn.execute(
                text(
                    "select count(*) from target_populations where target_band_id = :b "
                    "and matching_tags_snapshot is null"
                ),
                {"b": band},
            ).scalar()
            > 0
        )
    rerun = subprocess.run(
        [sys.executable, "-m", "qsnap_gui.cli", "--dsn", url, "snapshot", "--band", str(band)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr
    with engine.connect() as conn:
        assert stored_snapshots(conn, band) == reference_snapshots(conn, band)


def test_second_refresh_of_same_target_is_refused(fresh_db):
    engine = fresh_db.engine
    flow = RefreshFlow(engine, 2)
    flow.start()
    try:
        with pytest.raises(TargetBusy, match="target 2 .* is being refreshed"):
            refresh_population(engine, 2)
        with engine.connect() as conn:
            assert not [t for t in list_targets(conn) if t.id == 2][0].stuck
    finally:
        flow.finish()
    second = refresh_population(engine, 2)
    assert second.status == "populated" and not second.failed
    with engine.connect() as conn:
        assert memberships(conn, 2) == reference_membership(conn, 2)


def test_two_processes_refresh_at_once_one_is_refused(fresh_db):
    """The first refresh is held mid-way by a row lock, so the two surely overlap."""
    engine = fresh_db.engine
    url = fresh_db.url.render_as_string(hide_password=False)
    cmd = [sys.executable, "-m", "qsnap_gui.cli", "--dsn", url, "populate", "2"]
    refresh_population(engine, 2)
    with engine.begin() as conn:
        conn.execute(
            text(
                "update target_populations set matching_tags_snapshot = null where "
                "target_band_id in (select id from target_bands where target_id = 2)"
            )
        )
    with engine.connect() as blocker:
        band, row_id = blocker.execute(
            text(
                "select tp.target_band_id, tp.id from target_populations tp join target_bands b "
                "on b.id = tp.target_band_id where b.target_id = 2 order by tp.id limit 1"
            )
        ).one()
        blocker.execute(
            text("select 1 from target_populations where id = :i for update"), {"i": row_id}
        )
        first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not job_waiting_on_lock(engine, band):
            assert time.monotonic() < deadline and first.poll() is None
            threading.Event().wait(0.05)
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        blocker.rollback()
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 2
    assert "target 2 (Suburban Homeowners) is being refreshed by another qsnap session" in (
        second.stderr
    )
    with engine.connect() as conn:
        assert memberships(conn, 2) == reference_membership(conn, 2)
        for band_id in conn.execute(
            text("select id from target_bands where target_id = 2")
        ).scalars():
            assert stored_snapshots(conn, band_id) == reference_snapshots(conn, band_id)


def test_stuck_target_is_shown_and_resumed(fresh_db):
    engine = fresh_db.engine
    with engine.begin() as conn:
        conn.execute(text("update targets set population_status = 'populating' where id = 1"))
        conn.execute(text("update target_populations set matching_tags_snapshot = null"))
        stuck = {t.id: t.stuck for t in list_targets(conn)}
    assert stuck[1] is True
    result = refresh_population(engine, 1, resume=True)
    # resume runs the membership step again: on a current membership its diff changes nothing
    assert result.diff is not None and (result.diff.inserted, result.diff.deleted) == (0, 0)
    assert {b.state for b in result.bands} == {JobState.SUCCEEDED}
    with engine.connect() as conn:
        t = [t for t in list_targets(conn) if t.id == 1][0]
        assert t.population_status == "populated" and not t.stuck and t.missing == 0


def test_depopulate_clears_target(fresh_db):
    engine = fresh_db.engine
    with engine.connect() as conn:
        before = len(memberships(conn, 1))
    assert depopulate(engine, 1) == before > 0
    with engine.connect() as conn:
        assert memberships(conn, 1) == {}
        assert conn.execute(
            text("select population_status, last_populated_at from targets where id = 1")
        ).one() == ("not_populated", None)


def test_target_without_bands_ends_not_populated(fresh_db):
    with fresh_db.engine.begin() as conn:
        conn.execute(
            text(
                "insert into targets (id, title, population_status, created_at, updated_at) "
                "values (90, 'Empty', 'populated', now(), now())"
            )
        )
    result = refresh_population(fresh_db.engine, 90)
    assert result.status == "not_populated" and result.bands == []
    with fresh_db.engine.connect() as conn:
        assert conn.execute(
            text("select population_status from targets where id = 90")
        ).scalar() == ("not_populated")
