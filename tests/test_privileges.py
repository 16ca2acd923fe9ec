"""Least privilege: the README's role (its GRANT statements run as written) does the whole flow;
a SELECT-only role, a role missing one column privilege, and ``--read-only`` are refused before
any write, with a message naming what is missing, and nothing is written."""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from qsnap_gui.cli import main
from qsnap_gui.engine.flows import refresh_population
from qsnap_gui.engine.inspection import resnapshot_row
from qsnap_gui.engine.snapshots import JobState, snapshot_band
from qsnap_gui.store.db import POPULATE_PRIVILEGES, TEMPORARY_PRIVILEGE, open_database
from tests.worlds import reference_membership, reference_snapshots, stored_snapshots, table_digests

README = Path(__file__).resolve().parents[1] / "README.md"
_names = itertools.count(1)


def readme_grants(role: str, database: str) -> list[str]:
    """The GRANT statements of the README's least-privilege section, for this role and database."""
    section = README.read_text(encoding="utf-8").split("## A least-privilege role for qsnap")[1]
    sql = section.split("```sql", 1)[1].split("```", 1)[0]
    sql = re.sub(r"--[^\n]*", "", sql)
    statements = [" ".join(s.split()) for s in sql.split(";") if s.strip()]
    grants = [s for s in statements if s.startswith("GRANT ")]
    assert len(grants) >= 6 and all(s.endswith(" TO qsnap") for s in grants), grants
    return [
        s.replace(" DATABASE qlarius ", f' DATABASE "{database}" ')[: -len("qsnap")] + role
        for s in grants
    ]


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def roles(fresh_db, pg_admin_url):
    """Factory of LOGIN roles (cluster-wide: unique names, all dropped at the end) and the URL
    to connect as one. The database is hardened first: PUBLIC may not even connect."""
    database = fresh_db.url.database
    admin = make_url(pg_admin_url).set(database=database).render_as_string(False)
    made: list[str] = []
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'revoke all on database "{database}" from public')
        conn.execute("revoke all on schema public from public")

    def make(*statements: str) -> str:
        role = f"qsnap_lp_{os.getpid()}_{next(_names)}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"create role {role} login")
            made.append(role)
            for sql in statements:
                conn.execute(sql.replace("{role}", role))
        return fresh_db.url.set(username=role, password=None).render_as_string(False)

    yield make
    with psycopg.connect(admin, autocommit=True) as conn:
        for role in made:
            conn.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity where usename = %s",
                (role,),
            )
            conn.execute(f"drop owned by {role}")
            conn.execute(f"drop role {role}")


def browse_only(database: str) -> list[str]:
    return [
        f'grant connect on database "{database}" to {{role}}',
        "grant usage on schema public to {role}",
        "grant select on all tables in schema public to {role}",
    ]


def test_readme_role_runs_the_whole_flow(fresh_db, roles, capsys):
    database = fresh_db.url.database
    url = roles(*readme_grants("{role}", database))
    role_db = open_database(url)
    assert set(POPULATE_PRIVILEGES) <= role_db.privileges
    role_db.dispose()
    engine = fresh_db.engine
    with engine.connect() as conn:
        band = conn.execute(
            text("select min(id) from target_bands where target_id = 1")
        ).scalar_one()
        me, population = conn.execute(
            text("select me_file_id, id from target_populations where target_band_id = :b limit 1"),
            {"b": band},
        ).one()

    for args in (
        ["targets"],
        ["bands", "1"],
        ["snapshot", "--target", "1"],
        ["snapshot", "--band", str(band), "--mode", "repair"],
        ["populate", "2"],
        ["populate", "3", "--resume"],
        ["depopulate", "4", "--yes"],
        ["populate", "4"],
        ["inspect", str(me)],
        ["backfill", "--yes", "--include", "stale"],
        ["targets", "--json"],
    ):
        code, out, err = run(capsys, "--dsn", url, *args)
        assert code == 0, (args, out, err)
        assert "permission denied" not in out + err

    as_role = open_database(url)
    try:
        resnapshot_row(as_role.engine, population)  # the inspector's single-row force
    finally:
        as_role.dispose()
    with engine.connect() as conn:
        for target in (2, 4):
            members = dict(
                conn.execute(
                    text(
                        "select tp.me_file_id, tp.target_band_id from target_populations tp "
                        "join target_bands b on b.id = tp.target_band_id where b.target_id = :t"
                    ),
                    {"t": target},
                ).all()
            )
            assert members == reference_membership(conn, target)
        for band_id in conn.execute(text("select id from target_bands")).scalars():
            assert stored_snapshots(conn, band_id) == reference_snapshots(conn, band_id)
        statuses = dict(conn.execute(text("select id, population_status from targets")).all())
    assert statuses[3] == statuses[4] == "populated"


SNAP = "UPDATE target_populations(matching_tags_snapshot)"
WRITES = [
    (["snapshot", "--target", "1"], "snapshot", SNAP),
    (["snapshot", "--band", "1", "--mode", "force"], "snapshot", SNAP),
    (["populate", "1"], "populate", SNAP),
    (["populate", "3", "--resume"], "populate", SNAP),
    (["depopulate", "1", "--yes"], "depopulate", "DELETE on target_populations"),
    (["backfill", "--yes"], "backfill --yes", SNAP),
]


def test_select_only_role_browses_and_is_refused_every_write(fresh_db, roles, capsys):
    url = roles(*browse_only(fresh_db.url.database))
    before = table_digests(fresh_db.engine)
    for args in (["targets"], ["bands", "1"], ["inspect", "1"], ["backfill", "--dry-run"]):
        code, _out, err = run(capsys, "--dsn", url, *args)
        assert code == 0, (args, err)
    for args, action, privilege in WRITES:
        code, out, err = run(capsys, "--dsn", url, *args)
        assert code == 2, (args, out, err)
        assert err.startswith(f"qsnap: {action}: your database role lacks {privilege}"), err
        assert len(err.strip().splitlines()) == 1 and not out
    code, _out, err = run(capsys, "--dsn", url, "populate", "1")
    for privilege in POPULATE_PRIVILEGES:  # every one it lacks (it may read every table)
        assert (privilege in err) is not privilege.startswith("SELECT "), privilege
    assert table_digests(fresh_db.engine) == before


def test_one_missing_column_privilege_is_named_before_the_job_starts(fresh_db, roles, capsys):
    database = fresh_db.url.database
    url = roles(
        *browse_only(database),
        f'grant temporary on database "{database}" to {{role}}',
        "grant update (matching_tags_snapshot) on target_populations to {role}",
        "grant update (matching_tags_snapshot) on offers, ad_events to {role}",
    )
    before = table_digests(fresh_db.engine)
    code, out, err = run(capsys, "--dsn", url, "snapshot", "--target", "1")
    assert code == 2 and not out
    assert err.strip() == (
        "qsnap: snapshot: your database role lacks UPDATE target_populations(updated_at)"
    )
    # without the check the job would have failed on its first batch, three times over
    as_role = open_database(url)
    try:
        result = snapshot_band(as_role.engine, 1, backoff=0.01)
    finally:
        as_role.dispose()
    assert result.state is JobState.FAILED and "permission denied" in result.error
    after = table_digests(fresh_db.engine)
    # the job may first copy filled population snapshots into offers and ad events left NULL
    # (which this role may update); no population, target or other row changed
    for carrier in ("offers", "ad_events"):
        before.pop(carrier, None)
        after.pop(carrier, None)
    assert after == before


def test_a_role_without_temporary_is_refused_every_job_before_it_starts(fresh_db, roles, capsys):
    database = fresh_db.url.database
    grants = readme_grants("{role}", database)
    connect = [g for g in grants if " ON DATABASE " in g]
    assert len(connect) == 1 and "TEMPORARY" in connect[0]
    url = roles(*[g.replace("CONNECT, TEMPORARY ON", "CONNECT ON") for g in grants])
    as_role = open_database(url)
    try:
        assert TEMPORARY_PRIVILEGE not in as_role.privileges
        assert set(POPULATE_PRIVILEGES) - as_role.privileges == {TEMPORARY_PRIVILEGE}
    finally:
        as_role.dispose()
    before = table_digests(fresh_db.engine)
    for args, action in (
        (["snapshot", "--target", "1"], "snapshot"),
        (["snapshot", "--band", "1", "--mode", "force"], "snapshot"),
        (["backfill", "--yes"], "backfill --yes"),
        (["populate", "2"], "populate"),
    ):
        code, out, err = run(capsys, "--dsn", url, *args)
        assert code == 2 and not out, (args, out, err)
        assert err.strip() == (
            f"qsnap: {action}: your database role lacks TEMPORARY on the database "
            "(GRANT TEMPORARY ON DATABASE <database> TO <role>)"
        ), err
    assert run(capsys, "--dsn", url, "backfill", "--dry-run")[0] == 0
    assert table_digests(fresh_db.engine) == before
    # what the check spares the operator: the job fails on its first statement, every attempt
    as_role = open_database(url)
    try:
        result = snapshot_band(as_role.engine, 1, backoff=0.01)
    finally:
        as_role.dispose()
    assert result.state is JobState.FAILED
    assert "permission denied to create temporary tables" in result.error
    assert table_digests(fresh_db.engine) == before


def test_read_only_flag_refuses_every_write_and_the_session_cannot_write(fresh_db, capsys):
    url = fresh_db.url.render_as_string(hide_password=False)
    before = table_digests(fresh_db.engine)
    for args, action, _privilege in WRITES:
        code, out, err = run(capsys, "--dsn", url, "--read-only", *args)
        assert code == 2 and not out, (args, out, err)
        assert err.strip() == f"qsnap: {action} writes to the database: connect without --read-only"
    for args in (["targets"], ["bands", "1"], ["inspect", "1"], ["backfill", "--dry-run"]):
        assert run(capsys, "--dsn", url, "--read-only", *args)[0] == 0

    # the session itself refuses writes: the engines fail cleanly and write nothing
    read_only = open_database(url, read_only=True)
    try:
        assert read_only.privileges == set()
        with read_only.engine.connect() as conn:
            assert conn.execute(text("show transaction_read_only")).scalar() == "on"
        result = snapshot_band(read_only.engine, 1, mode="force", backoff=0.01)
        assert result.state is JobState.FAILED and "read-only transaction" in result.error
        with pytest.raises(Exception, match="read-only transaction"):
            refresh_population(read_only.engine, 1)
    finally:
        read_only.dispose()
    assert table_digests(fresh_db.engine) == before
