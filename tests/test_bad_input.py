"""Bad input on real databases: unknown, malformed and SQL-looking ids on every subcommand and
search, broken URLs (a wrong password on a server that checks it), missing tables and columns,
huge and deeply nested snapshot values, and names full of quotes, percent signs, backslashes
and emoji through every view, export and search."""

from __future__ import annotations

import csv
import json
import tempfile
import time
import warnings
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from qsnap_gui.cli import main
from qsnap_gui.domain.errors import UsageError
from qsnap_gui.engine import backfill as bf
from qsnap_gui.engine.flows import run_backfill
from qsnap_gui.engine.inspection import band_population_page, inspect_me_file, search_me_files
from qsnap_gui.engine.targets import get_target, list_targets
from qsnap_gui.store.db import open_database
from qsnap_gui.store.queries import list_bands, parse_id
from qsnap_gui.store.schema import create_demo_schema
from qsnap_gui.store.tables import REQUIRED_COLUMNS
from tests.worlds import reference_snapshots, stored_snapshots, table_digests

PASSWORD = "Known-Pw-7e1"


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(code: int, out: str, err: str, message: str) -> None:
    """Exit 2, one line on stderr naming the problem, no traceback, no password."""
    assert code == 2, (code, out, err)
    assert err.startswith("qsnap: ") and len(err.strip().splitlines()) == 1, err
    assert message in err, err
    assert "Traceback" not in out + err
    assert PASSWORD not in out + err


def first_member(engine, target_id: int = 1) -> tuple[int, int]:
    """(me_file, band) of some population row of the target."""
    with engine.connect() as conn:
        return tuple(
            conn.execute(
                text(
                    "select tp.me_file_id, tp.target_band_id from target_populations tp "
                    "join target_bands b on b.id = tp.target_band_id where b.target_id = :t "
                    "order by tp.id limit 1"
                ),
                {"t": target_id},
            ).one()
        )


# --- ids: unknown, malformed, SQL-looking -------------------------------------------------------

SQL_LIKE = ["1; drop table traits", "' or 1=1 --", "%", "\\", "1' or '1'='1", "🎯", "_"]
BAD_IDS = {
    "999999": "does not exist",
    "abc": "must be a whole number",
    "1.5": "must be a whole number",
    "1e3": "must be a whole number",
    "0x10": "must be a whole number",
    "1_0": "must be a whole number",
    "１２": "must be a whole number",
    "": "must be a whole number",
    "  ": "must be a whole number",
    "0": "must be a positive number",
    "-1": "must be a positive number",
    "9223372036854775808": "must be a positive number",
    "9" * 5000: "must be a positive number",
    **dict.fromkeys(SQL_LIKE, "must be a whole number"),
}
COMMANDS = [
    ["bands", "{}"],
    ["bands", "{}", "--json"],
    ["snapshot", "--band", "{}"],
    ["snapshot", "--target", "{}"],
    ["populate", "{}"],
    ["populate", "{}", "--resume"],
    ["depopulate", "{}", "--yes"],
    ["inspect", "{}"],
    ["inspect", "{me}", "--band", "{}"],
    ["backfill", "--dry-run", "--target", "{}"],
    ["backfill", "--yes", "--target", "1", "{}"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_bad_ids_on_every_subcommand_exit_2_and_change_nothing(db, db_url, capsys, command):
    me, _band = first_member(db.engine)
    before = table_digests(db.engine)
    for value, message in BAD_IDS.items():
        args = [a.format(value, me=me) if "{" in a else a for a in command]
        assert_refused(*run(capsys, "--dsn", db_url, *args), message)
    assert table_digests(db.engine) == before


def test_a_band_of_another_me_file_or_target_is_refused(db, db_url, capsys):
    """No subcommand takes a target and a band together; inspect takes a me_file and a band."""
    me, band = first_member(db.engine, 1)
    _other_me, other_band = first_member(db.engine, 2)
    code, out, err = run(capsys, "--dsn", db_url, "inspect", str(me), "--band", str(other_band))
    assert_refused(code, out, err, f"me_file {me} is not in band {other_band}")
    code, out, _ = run(capsys, "--dsn", db_url, "inspect", str(me), "--band", str(band), "--json")
    assert code == 0 and [m["band_id"] for m in json.loads(out)["memberships"]] == [band]


def test_sql_looking_input_to_core_searches_and_ids_is_inert(db):
    before = table_digests(db.engine)
    me, band = first_member(db.engine)
    with db.engine.connect() as conn:
        for value in [*SQL_LIKE, "1 or 1=1", "Ø'; --", "100%", "a_b", "\\%"]:
            page = search_me_files(conn, value)
            # a literal, case-insensitive prefix of the name: never a pattern, never SQL
            assert all(
                (h.display_name or "").casefold().startswith(value.strip().casefold())
                for h in page.rows
            ), (value, page)
            with pytest.raises(UsageError, match="unknown shape"):
                band_population_page(conn, band, shape=value)
            with pytest.raises(UsageError, match="must be a whole number"):
                parse_id(value, "target")
        assert search_me_files(conn, str(me)).rows[0].id == me
        for wrong in (0, -1, 2**63, 2**70):
            with pytest.raises(UsageError, match="does not exist"):
                inspect_me_file(conn, wrong)
            with pytest.raises(UsageError, match="does not exist"):
                bf.scan(conn, [wrong], measure=False)
        with pytest.raises(UsageError, match="target 999999 does not exist"):
            get_target(conn, 999999)
        with pytest.raises(UsageError, match="targets 999998, 999999 do not exist"):
            bf.resolve_bands(conn, [1, 999999, 999998])
    assert table_digests(db.engine) == before


# --- URLs and schemas ---------------------------------------------------------------------------


def test_broken_urls_exit_2_with_one_masked_line(db_url, empty_db_url, capsys):
    base = make_url(db_url)
    cases = [
        (
            base.set(database="qsnap_no_such_db", password=PASSWORD).render_as_string(False),
            'database "qsnap_no_such_db" does not exist',
        ),
        (
            f"postgresql://qsnap:{PASSWORD}@no-such-host.invalid:5432/qlarius",
            "cannot connect to no-such-host.invalid:5432/qlarius: failed to resolve host",
        ),
        (f"mysql://qsnap:{PASSWORD}@db/qlarius", "unsupported database URL scheme 'mysql'"),
        (f"http://qsnap:{PASSWORD}@db/qlarius", "unsupported database URL scheme 'http'"),
        ("sqlite:///tmp/qlarius.db", "unsupported database URL scheme 'sqlite'"),
        (f"host=db password={PASSWORD} dbname=qlarius", "not a database URL"),
        (PASSWORD, "not a database URL"),
        (f"postgres://qsnap:{PASSWORD}@db:{PASSWORD}/qlarius", "the port is not a number"),
        (f"postgres://qsnap:{PASSWORD}@x@db/qlarius", "more than one '@'"),
        (
            make_url(empty_db_url).set(password=PASSWORD).render_as_string(False),
            "does not hold the Qlarius tables qsnap needs (missing tables: me_file_tags",
        ),
    ]
    for url, message in cases:
        started = time.monotonic()
        assert_refused(*run(capsys, "--dsn", url, "targets"), message)
        assert time.monotonic() - started < 15, url
        assert_refused(*run(capsys, "--dsn", url, "snapshot", "--target", "1"), message)


def test_each_missing_column_is_named(create_db, capsys):
    url = create_db("columns")
    db = open_database(url, check_schema=False)
    with db.engine.begin() as conn:
        create_demo_schema(conn)
    try:
        for table, columns in REQUIRED_COLUMNS.items():
            column = columns[-1]
            with db.engine.begin() as conn:
                conn.execute(text(f'alter table {table} rename column "{column}" to gone'))
            code, out, err = run(capsys, "--dsn", url, "targets")
            assert_refused(code, out, err, f"missing columns: {table}.{column})")
            with db.engine.begin() as conn:
                conn.execute(text(f'alter table {table} rename column gone to "{column}"'))
        assert run(capsys, "--dsn", url, "targets")[0] == 0
    finally:
        db.dispose()


ROLE = "qsnap_pw_check"
RIGHT = "Right-Pw-42"


@pytest.fixture(scope="module")
def checking_server():
    """A server of this module alone whose pg_hba asks ROLE for a scram password."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        server = pgserver.get_server(tempfile.mkdtemp(prefix="qsnap-pw-"), cleanup_mode="delete")
    admin = server.get_uri("postgres")
    hba = Path(server.pgdata) / "pg_hba.conf"
    hba.write_text(f"local all {ROLE} scram-sha-256\n" + hba.read_text())
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"create role {ROLE} login password '{RIGHT}'")
        conn.execute("select pg_reload_conf()")
    url = make_url(admin.replace("postgresql://", "postgresql+psycopg://", 1))
    url = url.set(username=ROLE, password=None)

    def asks_for_password() -> bool:
        try:
            psycopg.connect(url.set(drivername="postgresql").render_as_string(False)).close()
        except psycopg.OperationalError as exc:
            return "no password supplied" in str(exc)
        return False

    deadline = time.monotonic() + 30
    while not asks_for_password():  # the reload is asynchronous
        assert time.monotonic() < deadline, "pg_hba.conf was not reloaded"
        time.sleep(0.05)
    yield url
    server.cleanup()


def test_wrong_password_in_url_or_environment(checking_server, capsys, monkeypatch):
    monkeypatch.setenv("PGPASSFILE", "/nonexistent/pgpass")
    monkeypatch.delenv("PGPASSWORD", raising=False)
    wrong = checking_server.set(password=PASSWORD).render_as_string(False)
    failed = f'password authentication failed for user "{ROLE}"'
    assert_refused(*run(capsys, "--dsn", wrong, "targets"), failed)
    assert_refused(*run(capsys, "--dsn", wrong, "--read-only", "inspect", "1"), failed)

    bare = checking_server.render_as_string(False)
    assert_refused(*run(capsys, "--dsn", bare, "targets"), "no password supplied")
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    assert_refused(*run(capsys, "--dsn", bare, "targets"), failed)

    # the right one gets past the server: the next complaint is the missing tables
    monkeypatch.setenv("PGPASSWORD", RIGHT)
    code, out, err = run(capsys, "--dsn", bare, "targets")
    assert_refused(code, out, err, "does not hold the Qlarius tables")
    assert RIGHT not in out + err


# --- huge and deep snapshot values ---------------------------------------------------------------

DEEP = '{"tags": ' + "[" * 10_000 + "]" * 10_000 + "}"
HUGE_VALUE = "y" * 10_000_000
HUGE = json.dumps({"tags": [[1, "huge", 1, [[2, HUGE_VALUE, 1]]]]})


def test_huge_and_deep_snapshots_neither_hang_nor_crash(db, db_url, capsys):
    with db.engine.begin() as conn:
        (deep_id, deep_me, band), (huge_id, huge_me, _) = conn.execute(
            text(
                "select id, me_file_id, target_band_id from target_populations "
                "where target_band_id = (select target_band_id from target_populations tp "
                "join target_bands b on b.id = tp.target_band_id where b.target_id = 1 "
                "group by 1 order by count(*) desc limit 1) order by id limit 2"
            )
        ).all()
        for pid, value in ((deep_id, DEEP), (huge_id, HUGE)):
            conn.execute(
                text(
                    "update target_populations set matching_tags_snapshot = cast(:v as jsonb) "
                    "where id = :i"
                ),
                {"v": value, "i": pid},
            )
    # the hazard is real: psycopg's jsonb loader gives up on the deep value
    with db.engine.connect() as conn, pytest.raises(RecursionError):
        conn.execute(
            text("select matching_tags_snapshot from target_populations where id = :i"),
            {"i": deep_id},
        ).scalar()

    started = time.monotonic()
    with db.engine.connect() as conn:
        targets = {t.id: t for t in list_targets(conn)}
        bands = {b.id: b for b in list_bands(conn, 1)}
    assert targets[1].population > 0 and bands[band].shapes["invalid"] >= 1

    for args in (["targets"], ["targets", "--json"], ["bands", "1"], ["bands", "1", "--json"]):
        code, out, err = run(capsys, "--dsn", db_url, *args)
        assert code == 0 and not err, err
    code, out, err = run(capsys, "--dsn", db_url, "inspect", str(deep_me))
    assert code == 0 and "nested too deeply to read (20,010 characters)" in out
    code, out, err = run(capsys, "--dsn", db_url, "inspect", str(deep_me), "--json")
    shapes = {m["population_id"]: m["shape"] for m in json.loads(out)["memberships"]}
    assert code == 0 and shapes[deep_id] == "invalid"
    code, out, err = run(capsys, "--dsn", db_url, "inspect", str(huge_me))
    assert code == 0 and "huge" in out
    code, out, err = run(capsys, "--dsn", db_url, "inspect", str(huge_me), "--json")
    huge = next(m for m in json.loads(out)["memberships"] if m["population_id"] == huge_id)
    assert code == 0 and huge["tags"][0][3][0][1] == HUGE_VALUE
    code, out, err = run(
        capsys, "--dsn", db_url, "backfill", "--dry-run", "--json", "--include", "stale"
    )
    scanned = {r["band_id"]: r for r in json.loads(out)["bands"]}
    assert code == 0 and scanned[band]["broken"] >= 1 and scanned[band]["stale"] >= 1

    # the fix rewrites both from the tags; every row of the band ends exact
    code, out, err = run(
        capsys, "--dsn", db_url, "backfill", "--yes", "--include", "stale", "--target", "1"
    )
    assert code == 0, out + err
    with db.engine.connect() as conn:
        assert stored_snapshots(conn, band) == reference_snapshots(conn, band)
    assert time.monotonic() - started < 60


# --- names with quotes, percent signs, backslashes and emoji -------------------------------------

NAMES = {
    "target": "Tgt 'O'Neil' \"q\" 100% back\\slash _x_ 🎯",
    "band": "Band ''; drop table traits; -- 50% \\n 🛑",
    "group": 'Grp "dbl" % _ \\\\ 🧪',
    "parent": "Parent 'p' 100%% \\ 🏠",
    "child": 'Child "c" _%_ \\\' 🐾',
    "value": "Val 'v' \"w\" 99.9% C:\\path 🎉",
    "me_file": '%_\\ O\'Neil "me" 🙂',
}


def test_odd_names_survive_every_view_export_and_search(fresh_db, capsys, tmp_path):
    db = fresh_db
    url = db.url.render_as_string(hide_password=False)
    with db.engine.begin() as conn:
        band = conn.execute(
            text("select id from target_bands where target_id = 1 and is_bullseye = '1'")
        ).scalar_one()
        me, tag_id, trait, group = conn.execute(
            text(
                "select tp.me_file_id, mt.id, mt.trait_id, g.trait_group_id "
                "from target_populations tp "
                "join target_band_trait_groups g on g.target_band_id = tp.target_band_id "
                "join trait_group_traits gt on gt.trait_group_id = g.trait_group_id "
                "join me_file_tags mt on mt.me_file_id = tp.me_file_id and mt.trait_id = gt.trait_id "
                "where tp.target_band_id = :b order by tp.id, mt.id limit 1"
            ),
            {"b": band},
        ).one()
        parent = conn.execute(
            text("select parent_trait_id from traits where id = :t"), {"t": trait}
        ).scalar_one()
        for sql, key, row in (
            ("update targets set title = :v where id = :i", "target", 1),
            ("update target_bands set title = :v where id = :i", "band", band),
            ("update trait_groups set title = :v where id = :i", "group", group),
            ("update traits set trait_name = :v where id = :i", "parent", parent),
            ("update traits set trait_name = :v where id = :i", "child", trait),
            ("update me_file_tags set tag_value = :v where id = :i", "value", tag_id),
            ("update me_files set display_name = :v where id = :i", "me_file", me),
        ):
            conn.execute(text(sql), {"v": NAMES[key], "i": row})
    before = table_digests(db.engine)

    assert run(capsys, "--dsn", url, "snapshot", "--band", str(band), "--mode", "force")[0] == 0

    code, out, _ = run(capsys, "--dsn", url, "targets", "--json")
    assert code == 0 and {t["id"]: t["title"] for t in json.loads(out)}[1] == NAMES["target"]
    code, out, _ = run(capsys, "--dsn", url, "targets")
    assert code == 0 and NAMES["target"] in out

    code, out, _ = run(capsys, "--dsn", url, "bands", "1", "--json")
    shown = next(b for b in json.loads(out) if b["band_id"] == band)
    assert code == 0 and shown["title"] == NAMES["band"]
    assert {"id": group, "title": NAMES["group"]} in shown["trait_groups"]
    code, out, _ = run(capsys, "--dsn", url, "bands", "1")
    assert code == 0 and NAMES["group"] in out

    code, out, _ = run(capsys, "--dsn", url, "inspect", str(me), "--json")
    report = json.loads(out)
    assert code == 0 and report["display_name"] == NAMES["me_file"]
    membership = next(m for m in report["memberships"] if m["band_id"] == band)
    assert membership["target_title"] == NAMES["target"]
    parents = {p[0]: p for p in membership["tags"]}
    assert parents[parent][1] == NAMES["parent"]
    assert [trait, NAMES["value"]] in [child[:2] for child in parents[parent][3]]
    groups = {g["group_id"]: g for g in membership["satisfied_groups"]}
    assert groups[group]["title"] == NAMES["group"]
    assert [trait, NAMES["child"], NAMES["value"]] in groups[group]["tags"]
    assert membership["stale"]["up_to_date"] is True
    code, out, _ = run(capsys, "--dsn", url, "inspect", str(me))
    assert code == 0
    for key in ("parent", "value", "child"):
        assert NAMES[key] in out, key
    for key in ("me_file", "target", "group"):
        assert repr(NAMES[key]) in out, key  # quoted in the text view, exactly as Python does

    # export: the backfill report (CSV) and --json carry the titles exactly
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "update target_populations set matching_tags_snapshot = null "
                "where target_band_id = :b and id % 2 = 0"
            ),
            {"b": band},
        )
    code, out, _ = run(capsys, "--dsn", url, "backfill", "--dry-run", "--json", "--target", "1")
    assert code == 0
    assert {r["target_title"] for r in json.loads(out)["bands"]} == {NAMES["target"]}
    with db.engine.connect() as conn:
        scan = bf.scan(conn, [1], measure=False)
    outcomes = run_backfill(db.engine, bf.plan(scan))
    with bf.report_csv(outcomes, tmp_path / "report.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and {r["target_title"] for r in rows} == {NAMES["target"]}

    # search: the name's own prefix finds it; its characters are never patterns
    with db.engine.connect() as conn:
        for prefix in ("%", "%_", "%_\\", '%_\\ o\'neil "ME" 🙂', NAMES["me_file"]):
            hits = search_me_files(conn, prefix).rows
            assert [h.id for h in hits] == [me], prefix
        assert search_me_files(conn, "_").rows == ()
        assert search_me_files(conn, "\\").rows == ()
        assert stored_snapshots(conn, band) == reference_snapshots(conn, band)

    after = table_digests(db.engine)
    for table in ("target_populations", "offers", "ad_events"):  # the snapshot columns
        del after[table], before[table]
    assert after == before, "a snapshot run or a search wrote outside the snapshot columns"
