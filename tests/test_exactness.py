"""The engine against the Python reference (tests/reference.py) on a database shaped like
production holding every edge case of DOMAIN.md (tests/prodcases.py): band order and labels,
membership, snapshots in every mode on both write paths, offers and ad events, the null-values
rule, JSON null, tie order, orphans, and the fixed point of backfill."""

from __future__ import annotations

import json
import os
from itertools import count

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from qsnap_gui.cli import main
from qsnap_gui.domain.codec import broken_sql, decode, is_broken, same_sql, same_up_to_ties
from qsnap_gui.domain.jobs import Mode
from qsnap_gui.engine import backfill as bf
from qsnap_gui.engine.inspection import inspect_me_file
from qsnap_gui.engine.population import apply_membership, outermost_first
from qsnap_gui.engine.snapshots import JobState, snapshot_band
from qsnap_gui.engine.targets import list_targets
from qsnap_gui.store.db import open_database
from qsnap_gui.store.queries import list_bands, refresh_order
from tests import reference
from tests.prodcases import build_production_cases

_roles = count(1)


@pytest.fixture(scope="module")
def template(create_db):
    """The production-shaped database, made once; each test works on its own copy."""
    url = create_db("exact_template")
    cases = build_production_cases(url).cases
    return make_url(url).database, cases


@pytest.fixture
def prod(create_db, template):
    name, cases = template
    database = open_database(create_db("exact", template=name))
    yield database, cases
    database.dispose()


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def url_of(database) -> str:
    return database.url.render_as_string(hide_password=False)


def target_ids(conn) -> list[int]:
    return list(conn.execute(text("select id from targets order by id")).scalars())


def state(conn) -> dict[int, tuple]:
    """Every population row as stored: (band, me_file, snapshot text, updated_at)."""
    return {
        r[0]: tuple(r[1:])
        for r in conn.execute(
            text(
                "select id, target_band_id, me_file_id, matching_tags_snapshot::text, updated_at "
                "from target_populations"
            )
        )
    }


# --- band order, labels and membership ------------------------------------------------------


def test_labels_refresh_order_and_notes_follow_the_application(prod, capsys):
    database, cases = prod
    outer, tied = cases["tied_rings"]
    bullseye, _gone_group = cases["deleted_group_link"]
    edge = cases["untitled_target"][0]
    with database.engine.connect() as conn:
        for target in target_ids(conn):
            bands = list_bands(conn, target)
            assert {b.id: b.label for b in bands} == reference.labels(conn, target)
            order = reference.refresh_order(conn, target)
            assert [b.id for b in refresh_order(bands)] == order
            assert outermost_first(conn, target) == order
        bands = {b.id: b for b in list_bands(conn, edge)}
        verdicts = reference.judge(conn)
        pops = reference.populations(conn)
        me_files = set(conn.execute(text("select id from me_files")).scalars())
    # the tie: 1 group each; the lower id is the outer band but gets the smaller ring number
    assert (bands[outer].label, bands[tied].label) == ("Ring 1", "Ring 2")
    assert refresh_order(list(bands.values()))[:2] == [bands[outer], bands[tied]]
    tie = (
        f"bands {outer} and {tied} have 1 group each: the application nests {tied} inside "
        f"{outer} while labelling it Ring 2"
    )
    assert tie in bands[outer].notes and tie in bands[tied].notes
    # duplicate link counted once, the link to a deleted group ignored and shown
    assert len(bands[bullseye].groups) == 3 and bands[bullseye].dangling_links == 1
    assert bands[bullseye].notes == ("1 link to a deleted trait group",)
    orphans = sum(
        1
        for p in pops.values()
        if p.band == bullseye and (p.me_file is None or p.me_file not in me_files)
    )
    assert bands[bullseye].orphans == orphans >= 3  # NULL me_file, deleted me_file, ghost
    assert bands[bullseye].population == sum(
        1 for p in pops.values() if p.band == bullseye and verdicts[p.id] != "orphan"
    )
    broken = sum(1 for p in pops.values() if p.band == bullseye and verdicts[p.id] == "broken")
    assert bands[bullseye].broken == broken

    code, out, err = run(capsys, "--dsn", url_of(database), "bands", str(edge))
    assert code == 0, err
    assert f"warning: {tie}" in out
    assert f"warning: band {bullseye} (Bullseye): 1 link to a deleted trait group" in out
    code, out, err = run(capsys, "--dsn", url_of(database), "bands", str(edge), "--json")
    assert code == 0, err
    listed = {b["band_id"]: b for b in json.loads(out)}
    assert listed[bullseye]["links_to_deleted_groups"] == 1
    assert listed[bullseye]["orphans"] == orphans and listed[tied]["notes"] == [tie]


def test_membership_follows_the_application(prod):
    database, cases = prod
    edge = cases["untitled_target"][0]
    (ghost,) = cases["ghost_me_file"]
    (null_me_file_row,) = cases["population_null_me_file"]
    with database.engine.connect() as conn:
        for target in target_ids(conn):
            diff = apply_membership(conn, target)
            members = dict(
                conn.execute(
                    text(
                        "select tp.me_file_id, tp.target_band_id from target_populations tp "
                        "join target_bands b on b.id = tp.target_band_id "
                        "where b.target_id = :t and tp.me_file_id is not null"
                    ),
                    {"t": target},
                ).all()
            )
            assert members == reference.membership(conn, target), target
            if target == edge:
                # the edge target holds what the application made: nothing to change
                assert (diff.inserted, diff.deleted) == (0, 0)
                assert ghost in members
        # a row without a me_file is an orphan: never deleted, never written
        assert conn.execute(
            text("select count(*) from target_populations where id = :p"),
            {"p": null_me_file_row},
        ).scalar_one()
        conn.rollback()


# --- snapshots and their copies -------------------------------------------------------------

WRITES = {
    Mode.MISSING: {"missing"},
    Mode.REPAIR: {"missing", "broken"},
    Mode.FORCE: {"missing", "broken", "stale"},
}


@pytest.mark.parametrize("relay", [False, True], ids=["staged", "relayed"])
@pytest.mark.parametrize("mode", list(Mode))
def test_every_mode_writes_what_the_reference_says_and_carries_it(prod, mode, relay):
    database, _cases = prod
    engine = database.engine
    with engine.connect() as conn:
        verdicts = reference.judge(conn)
        before = state(conn)
        carriers = reference.carriers(conn)
        bands = sorted(reference.processed_bands(conn))
    to_write = {p for p, v in verdicts.items() if v in WRITES[mode]}
    assert to_write, "the edge cases leave rows for every mode to write"
    written = 0
    for band in bands:
        result = snapshot_band(
            engine, band, mode=mode, split_rows=1 if relay else 10**9, writers=2, backoff=0
        )
        assert result.state is JobState.SUCCEEDED, result.error
        written += result.rows_written
    assert written == len(to_write)
    with engine.connect() as conn:
        after = state(conn)
        build = reference.band_snapshot_builder(conn)
        pops = reference.populations(conn)
        assert reference.normalised(reference.carriers(conn)) == reference.normalised(
            reference.expected_carriers(carriers, conn, set(bands))
        )
        left = {v for p, v in reference.judge(conn).items()}
    for pid, row in before.items():
        if pid in to_write:
            p = pops[pid]
            assert p.snapshot == build(p.band, p.me_file), pid
            assert after[pid][3] >= row[3]
        else:  # orphans, and rows this mode leaves alone (right ones included)
            assert after[pid] == row, (pid, verdicts[pid])
    assert not left & WRITES[mode]


def _blank_judgements(conn) -> tuple[dict[int, bool], dict[int, bool]]:
    """Per population with a me_file and a snapshot: broken by SQL, and by the reference."""
    sql = dict(
        conn.execute(
            text(
                "select tp.id, "
                f"{broken_sql('tp.matching_tags_snapshot', 'tp.me_file_id')} "
                "from target_populations tp "
                "where tp.me_file_id is not null and tp.matching_tags_snapshot is not null"
            )
        ).all()
    )
    tags = reference.me_file_tags(conn)
    pops = reference.populations(conn)
    python = {pid: is_broken(pops[pid].decoded, tags[pops[pid].me_file]) for pid in sql}
    return sql, python


def test_blank_values_are_broken_only_where_the_tag_has_a_value_now(prod):
    database, cases = prod
    true_blanks = set(cases["true_null_values_snapshot"])
    (wrong_blanks,) = cases["null_values_snapshot"]
    with database.engine.connect() as conn:
        sql, python = _blank_judgements(conn)
        before = state(conn)
    assert sql == python
    assert not any(sql[p] for p in true_blanks) and sql[wrong_blanks]
    bullseye = cases["deleted_group_link"][0]
    result = snapshot_band(database.engine, bullseye, mode=Mode.REPAIR)
    assert result.state is JobState.SUCCEEDED
    with database.engine.connect() as conn:
        after = state(conn)
        pops = reference.populations(conn)
    for pid in true_blanks:  # correct as they are: never rewritten
        assert after[pid] == before[pid]
        assert decode(pops[pid].snapshot).shape == "null_values"
    assert after[wrong_blanks][3] > before[wrong_blanks][3]
    assert decode(pops[wrong_blanks].snapshot).shape == "envelope"


def test_json_null_is_one_broken_value_everywhere(prod, capsys):
    database, cases = prod
    (row,) = cases["json_null_snapshot"]
    outer = cases["tied_rings"][0]
    edge = cases["untitled_target"][0]
    url = url_of(database)
    code, out, _ = run(capsys, "--dsn", url, "bands", str(edge), "--json")
    listed = {b["band_id"]: b for b in json.loads(out)}[outer]
    assert listed["shapes"]["invalid"] == 1 and listed["shapes"]["missing"] == 0
    assert listed["broken"] == 1
    with database.engine.connect() as conn:
        target = next(t for t in list_targets(conn) if t.id == edge)
        scan = bf.scan(conn, [edge], measure=False)
        verdicts = reference.judge(conn)
        edge_bands = {b.id for b in list_bands(conn, edge)}
        missing = sum(
            1
            for p in reference.populations(conn).values()
            if p.band in edge_bands and verdicts[p.id] == "missing"
        )
    assert target.missing == missing  # SQL NULL only
    assert scan.row(outer).missing == 0 and scan.row(outer).broken == 1
    assert scan.row(outer).shapes["invalid"] == 1
    with database.engine.connect() as conn:
        before = state(conn)[row]
    assert snapshot_band(database.engine, outer, mode=Mode.MISSING).rows_written == 0
    with database.engine.connect() as conn:
        assert state(conn)[row] == before
    assert snapshot_band(database.engine, outer, mode=Mode.REPAIR).rows_written == 1
    with database.engine.connect() as conn:
        snap = reference.populations(conn)[row].snapshot
        assert snap == reference.band_snapshot_builder(conn)(outer, before[1])


def _application_order(value: dict) -> dict:
    """The same snapshot with tied entries in the opposite order (as the application may)."""

    def flip(entries: list) -> list:
        out, run = [], []
        for e in entries:
            if run and e[2] != run[-1][2]:
                out += run[::-1]
                run = []
            run.append(e)
        return out + run[::-1]

    return {"tags": flip([[p[0], p[1], p[2], flip(p[3])] for p in value["tags"]])}


def test_snapshots_that_differ_only_in_tie_order_are_the_same(prod, capsys):
    database, cases = prod
    engine = database.engine
    edge = cases["untitled_target"][0]
    bullseye = cases["deleted_group_link"][0]
    code, _, err = run(capsys, "--dsn", url_of(database), "backfill", "--yes", "--include", "stale")
    assert code == 0, err
    flipped = 0
    with engine.begin() as conn:
        for p in reference.populations(conn).values():
            if p.band == bullseye and reference.is_envelope(p):
                turned = _application_order(p.snapshot)
                if turned != p.snapshot:
                    assert same_up_to_ties(decode(turned).parents, p.decoded.parents)
                    assert conn.execute(
                        text(f"select {same_sql('cast(:a as jsonb)', 'cast(:b as jsonb)')}"),
                        {"a": json.dumps(turned), "b": json.dumps(p.snapshot)},
                    ).scalar_one()
                    conn.execute(
                        text(
                            "update target_populations set matching_tags_snapshot = "
                            "cast(:s as jsonb) where id = :p"
                        ),
                        {"s": json.dumps(turned), "p": p.id},
                    )
                    flipped += 1
        before = state(conn)
    assert flipped, "the edge Bullseye has tied parents and children"
    with engine.connect() as conn:
        scan = bf.scan(conn, [edge], include=bf.CATEGORIES, measure=False)
        assert set(reference.judge(conn).values()) <= {"good", "orphan"}
        me_file = next(
            p.me_file
            for p in reference.populations(conn).values()
            if p.band == bullseye and p.me_file is not None
        )
        report = inspect_me_file(conn, me_file, band_id=bullseye)
    assert scan.totals()["stale"] == scan.totals()["broken"] == 0
    assert report.memberships[0].stale.up_to_date
    assert snapshot_band(engine, bullseye, mode=Mode.FORCE).rows_written == 0
    with engine.connect() as conn:
        assert state(conn) == before
    # a real difference is still one
    assert not same_up_to_ties(
        decode({"tags": [[1, "a", 1, [[2, "x", 1], [3, "y", 2]]]]}).parents,
        decode({"tags": [[1, "a", 1, [[3, "y", 2], [2, "x", 1]]]]}).parents,
    )


# --- the fixed point, and every command on production's NULLs -------------------------------


def _totals(capsys, url: str, include: str) -> dict:
    code, out, err = run(
        capsys, "--dsn", url, "backfill", "--dry-run", "--json", "--include", include
    )
    assert code == 0, err
    return json.loads(out)["totals"]


@pytest.mark.parametrize("include", ["missing,broken", "missing,broken,stale"])
def test_backfill_reaches_a_fixed_point(prod, capsys, include):
    database, _cases = prod
    url = url_of(database)
    counted = include.split(",") + ["offers_left_null"]
    first = _totals(capsys, url, include)
    assert all(first[c] for c in ("missing", "broken", "offers_left_null")), first
    code, out, err = run(capsys, "--dsn", url, "backfill", "--yes", "--json", "--include", include)
    assert code == 0, err
    assert {
        c: v for c, v in _totals(capsys, url, include).items() if c in counted
    } == dict.fromkeys(counted, 0)
    with database.engine.connect() as conn:
        before = state(conn), reference.carriers(conn)
        verdicts = set(reference.judge(conn).values())
        assert reference.left_null(conn) == 0
    assert not verdicts & {"missing", "broken"}
    code, out, err = run(capsys, "--dsn", url, "backfill", "--yes", "--json", "--include", include)
    assert code == 0, err
    assert sum(r["rows_written"] for r in json.loads(out).get("results", [])) == 0
    with database.engine.connect() as conn:
        assert (state(conn), reference.carriers(conn)) == before


def test_every_command_copes_with_production_nulls(prod, capsys):
    database, cases = prod
    url = url_of(database)
    edge = cases["untitled_target"][0]
    (unknown,) = cases["null_status_target"]
    (deleted,) = cases["deleted_me_file"]
    (ghost,) = cases["ghost_me_file"]
    (null_band_row,) = cases["population_null_band"]
    with database.engine.connect() as conn:
        me_file = conn.execute(
            text("select me_file_id from target_populations where id = :p"), {"p": null_band_row}
        ).scalar_one()
    code, out, err = run(capsys, "--dsn", url, "targets")
    assert code == 0, err
    assert f"(untitled #{edge})" in out and "belong to no target's band" in out
    code, out, err = run(capsys, "--dsn", url, "targets", "--json")
    listed = {t["id"]: t for t in json.loads(out)}
    assert listed[unknown]["population_status"] == "not_populated"
    assert listed[edge]["title"] is None and listed[edge]["orphans"] >= 3
    for args in (
        ["bands", str(edge)],
        ["snapshot", "--target", str(edge), "--mode", "repair"],
        ["inspect", str(me_file), "--json"],
        ["inspect", str(deleted)],
        ["inspect", str(ghost), "--json"],
        ["populate", str(edge)],
        ["populate", str(unknown)],
    ):
        code, out, err = run(capsys, "--dsn", url, *args)
        assert code == 0, (args, err)
        assert "Traceback" not in err
        if args[0] == "inspect" and "--json" in args and args[1] == str(me_file):
            bands = [m["band_id"] for m in json.loads(out)["memberships"]]
            assert None in bands
    with database.engine.connect() as conn:
        report = inspect_me_file(conn, ghost)
        assert not report.me_file_exists and report.memberships


# --- offers and ad events: privileges, and databases without them ---------------------------


@pytest.fixture
def role_url(prod, pg_admin_url):
    """A role that may write snapshots but not the offers' and ad events' copies."""
    database, _cases = prod
    name = database.url.database
    admin = make_url(pg_admin_url).set(database=name).render_as_string(False)
    role = f"qsnap_exact_{os.getpid()}_{next(_roles)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"create role {role} login")
        conn.execute(f'grant connect on database "{name}" to {role}')
        conn.execute(f"grant usage on schema public to {role}")
        conn.execute(f"grant select on all tables in schema public to {role}")
        conn.execute(
            f"grant update (matching_tags_snapshot, updated_at) on target_populations to {role}"
        )
    yield database.url.set(username=role, password=None).render_as_string(False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity where usename = %s", (role,)
        )
        conn.execute(f"drop owned by {role}")
        conn.execute(f"drop role {role}")


def test_a_role_that_cannot_update_offers_is_refused_before_writing(prod, role_url, capsys):
    database, cases = prod
    bullseye = cases["deleted_group_link"][0]
    with database.engine.connect() as conn:
        before = state(conn), reference.carriers(conn)
    for args in (["snapshot", "--band", str(bullseye)], ["backfill", "--yes"]):
        code, out, err = run(capsys, "--dsn", role_url, *args)
        assert code == 2, (args, out, err)
        assert "UPDATE offers(matching_tags_snapshot)" in err
        assert "UPDATE ad_events(matching_tags_snapshot)" in err
    code, out, err = run(capsys, "--dsn", role_url, "backfill", "--dry-run", "--json")
    assert code == 0, err
    assert json.loads(out)["totals"]["offers_left_null"] > 0
    with database.engine.connect() as conn:
        assert (state(conn), reference.carriers(conn)) == before


def test_without_offers_and_ad_events_the_copy_is_skipped(prod):
    database, cases = prod
    with database.engine.begin() as conn:
        conn.execute(text("drop table offers, ad_events"))
    bullseye = cases["deleted_group_link"][0]
    result = snapshot_band(database.engine, bullseye, mode=Mode.REPAIR)
    assert result.state is JobState.SUCCEEDED and result.rows_written > 0
    with database.engine.connect() as conn:
        row = bf.band_counts(conn, bullseye, bf.DEFAULT_INCLUDE)
    assert row.offers_left_null is None and row.missing == row.broken == 0
    refreshed = open_database(url_of(database))
    try:
        assert {"UPDATE offers(matching_tags_snapshot)"} <= refreshed.privileges
    finally:
        refreshed.dispose()
