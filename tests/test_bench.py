"""The benchmark's strategies: the baseline port and the engine agree, the floor writes a
constant, the JSON floor each row's kept snapshot."""

from __future__ import annotations

import json
import os

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from qsnap_gui.cli.main import main
from qsnap_gui.domain.errors import UsageError
from qsnap_gui.engine.snapshot_sql import SPLIT_ROWS, WRITERS
from qsnap_gui.store.db import open_database
from qsnap_gui.tools.bench import (
    BENCH_TARGET,
    ScaleFigures,
    WorldOptions,
    autovacuum,
    baseline_band,
    floor_band,
    floor_stream,
    preview_against_membership,
    qsnap_bands,
    render,
    stale_repair,
    to_json,
)
from qsnap_gui.tools.bench.runs import keep_baseline
from qsnap_gui.tools.bench.servers import stock_server
from qsnap_gui.tools.bench.strategies import floor_writers
from qsnap_gui.tools.bench.worlds import world_spec
from qsnap_gui.tools.demo import check_tags_per_me_file, generate_demo
from tests.worlds import reference_snapshots, stored_snapshots


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _bands(engine) -> list[int]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text("select id from target_bands where target_id = :t order by id"),
                {"t": BENCH_TARGET},
            ).scalars()
        )


def _null(engine, bands: list[int]) -> int:
    with engine.begin() as conn:
        return conn.execute(
            text(
                "update target_populations set matching_tags_snapshot = null "
                "where target_band_id = any(:b)"
            ),
            {"b": bands},
        ).rowcount


def test_baseline_port_and_engine_write_the_reference_and_the_floor_a_constant(fresh_db):
    engine = fresh_db.engine
    bands = _bands(engine)
    rows = _null(engine, bands)
    assert rows > 1000

    assert sum(baseline_band(engine, b) for b in bands) == rows
    with engine.connect() as conn:
        baseline = {b: stored_snapshots(conn, b) for b in bands}
        assert baseline == {b: reference_snapshots(conn, b) for b in bands}

    _null(engine, bands)
    assert qsnap_bands(engine, bands) == rows
    with engine.connect() as conn:
        assert {b: stored_snapshots(conn, b) for b in bands} == baseline

    _null(engine, bands)
    assert sum(floor_band(engine, b) for b in bands) == rows
    with engine.connect() as conn:
        written = conn.execute(
            text(
                "select matching_tags_snapshot::text, count(*) from target_populations "
                "where target_band_id = any(:b) group by 1"
            ),
            {"b": bands},
        ).all()
    assert written == [('{"tags": []}', rows)]


def test_autovacuum_is_off_while_benchmarking_and_restored_after(fresh_db):
    engine = fresh_db.engine
    options = text("select reloptions from pg_class where oid = 'target_populations'::regclass")
    autovacuum(engine, False)
    with engine.connect() as conn:
        assert conn.execute(options).scalar() == ["autovacuum_enabled=off"]
    autovacuum(engine, True)
    with engine.connect() as conn:
        assert conn.execute(options).scalar() is None


def _world(create_db, world: WorldOptions) -> tuple[int, int, list[int]]:
    """A bench world of 600 me_files in a new database: me_files, tags, rows per band."""
    database = open_database(create_db("bench_world"), check_schema=False)
    try:
        generate_demo(database.engine, world_spec(600, world))
        with database.engine.connect() as conn:
            me_files, tags = conn.execute(
                text("select (select count(*) from me_files), (select count(*) from me_file_tags)")
            ).one()
            bands = list(
                conn.execute(
                    text(
                        "select count(tp.id) from target_bands b left join target_populations tp "
                        "on tp.target_band_id = b.id where b.target_id = :t group by b.id "
                        "order by b.id"
                    ),
                    {"t": BENCH_TARGET},
                ).scalars()
            )
    finally:
        database.dispose()
    return me_files, tags, bands


def test_equal_bands_hold_a_third_of_the_me_files_each(create_db):
    me_files, tags, bands = _world(create_db, WorldOptions(40, "equal"))
    assert me_files == 600 and sum(bands) == 600
    assert len(bands) == 3 and all(150 <= rows <= 250 for rows in bands), bands
    assert 36 <= tags / me_files <= 44


def test_tags_per_me_file_sets_the_mean_and_skewed_keeps_one_large_band(create_db):
    me_files, tags, bands = _world(create_db, WorldOptions(5, "skewed"))
    assert 4.5 <= tags / me_files <= 5.5
    assert max(bands) >= 0.8 * sum(bands)


def test_a_world_cannot_hold_more_tags_than_answers(capsys):
    code, _, err = run(capsys, "bench", "--tags-per-me-file", "1000", "--scale", "100")
    assert code == 2 and "--tags-per-me-file must be between 1 and" in err
    code, _, err = run(capsys, "bench", "--stock-server", "--keep")
    assert code == 2 and "that server is deleted" in err
    with pytest.raises(UsageError, match="between 4 and"):
        check_tags_per_me_file(3, "equal")


def test_the_floor_writes_through_as_many_connections_as_qsnap(fresh_db):
    engine = fresh_db.engine
    bands = _bands(engine)
    rows = _null(engine, bands)
    assert floor_writers(rows) == (WRITERS if rows >= SPLIT_ROWS else 1)
    assert floor_stream(engine, bands, writers=2) == rows
    with engine.connect() as conn:
        assert (
            conn.execute(
                text(
                    "select count(*) from target_populations where target_band_id = any(:b) "
                    "and matching_tags_snapshot = '{\"tags\": []}'"
                ),
                {"b": bands},
            ).scalar()
            == rows
        )


def test_the_json_floor_writes_each_row_its_own_kept_snapshot(fresh_db):
    engine = fresh_db.engine
    bands = _bands(engine)
    rows = _null(engine, bands)
    assert sum(baseline_band(engine, b) for b in bands) == rows
    keep_baseline(engine, bands)
    with engine.connect() as conn:
        kept = {b: stored_snapshots(conn, b) for b in bands}
    assert any(snap["tags"] for snaps in kept.values() for snap in snaps.values())
    _null(engine, bands)
    assert floor_stream(engine, bands, writers=2, same_json=True) == rows
    with engine.connect() as conn:
        assert {b: stored_snapshots(conn, b) for b in bands} == kept


def test_bench_dsn_refuses_a_qlarius_database_and_a_role_without_createdb(db_url, capsys):
    code, _, err = run(capsys, "bench", "--dsn", db_url, "--scale", "100")
    assert code == 2 and "holds Qlarius tables" in err and "never writes there" in err
    admin = make_url(db_url).set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute("drop role if exists qsnap_bench_plain")
        conn.execute("create role qsnap_bench_plain login")
    try:
        plain = make_url(db_url).set(username="qsnap_bench_plain", database="postgres")
        code, _, err = run(
            capsys, "bench", "--dsn", plain.render_as_string(hide_password=False), "--scale", "100"
        )
        assert code == 2 and "role qsnap_bench_plain may not create databases" in err
    finally:
        with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
            conn.execute("drop role qsnap_bench_plain")


def test_many_targets_on_a_named_server_checks_every_row_and_drops_its_database(
    empty_db_url, capsys
):
    code, out, _ = run(capsys, "bench", "--dsn", empty_db_url, "--many-targets", "20", "--json")
    report = json.loads(out)
    assert code == 0
    assert (report["targets"], report["bands"], report["populations"]) == (20, 60, 600)
    assert (report["missing"], report["broken"]) == (180, 240)
    assert report["rows_equal"] and report["mismatches"] == 0 and report["left_to_fix"] == 0
    commands = {c["command"]: c for c in report["commands"]}
    assert commands["qsnap backfill --yes"]["rows"] == 420
    assert all(c["peak_rss_mb"] > 0 for name, c in commands.items() if name.startswith("qsnap"))
    assert commands["qsnap backfill --dry-run"]["work_seconds"] is not None
    assert commands["qsnap targets"]["work_seconds"] is not None
    with psycopg.connect(
        make_url(empty_db_url).set(drivername="postgresql").render_as_string(hide_password=False)
    ) as conn:
        left = conn.execute(
            "select count(*) from pg_database where datname like 'qsnap_bench_%'"
        ).fetchone()[0]
    assert left == 0


def test_stock_server_has_postgres_defaults_and_is_deleted_afterwards():
    with stock_server() as server:
        settings = server.settings
        url = server.create("qsnap_bench_probe")
        with psycopg.connect(
            make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        ) as conn:
            assert conn.execute("select current_database()").fetchone()[0] == "qsnap_bench_probe"
            folder = conn.execute("select current_setting('data_directory')").fetchone()[0]
        assert os.path.isdir(folder)
        server.drop("qsnap_bench_probe")
    assert (settings["shared_buffers"], settings["work_mem"], settings["wal_level"]) == (
        "128MB",
        "4MB",
        "replica",
    )
    assert not os.path.exists(folder)


def test_stale_repair_figure_counts_the_rows_each_run_wrote_and_restores_the_tags(fresh_db):
    engine = fresh_db.engine
    bands = _bands(engine)
    _null(engine, bands)
    qsnap_bands(engine, bands)
    keep_baseline(engine, bands)
    tags = text(
        "select md5(string_agg(id || ':' || coalesce(tag_value, '~'), ',' order by id)) "
        "from me_file_tags"
    )
    with engine.connect() as conn:
        before = conn.execute(tags).scalar()
    url = engine.url.render_as_string(hide_password=False)
    figures = stale_repair(engine, url, bands, lambda line: None)
    assert figures.band_rows >= 100 and figures.stale_rows > 0
    assert figures.stale_rows <= figures.band_rows // 50
    assert figures.stale_written == figures.stale_rows
    assert figures.force_written == figures.stale_rows
    assert figures.equal and figures.stale_rss_mb > 0 and figures.force_rss_mb > 0
    with engine.connect() as conn:
        assert conn.execute(tags).scalar() == before


def test_preview_figure_times_the_membership_step_without_changing_the_populations(fresh_db):
    engine = fresh_db.engine
    digest = text(
        "select count(*), md5(string_agg(target_band_id || ':' || me_file_id || ':' || "
        "coalesce(matching_tags_snapshot::text, '~') || updated_at::text, ',' order by id)) "
        "from target_populations"
    )
    with engine.begin() as conn:
        # a me_file leaves the target: the membership step's diff deletes its row (rolled back)
        conn.execute(
            text(
                "delete from me_file_tags where me_file_id = (select min(tp.me_file_id) "
                "from target_populations tp join target_bands b on b.id = tp.target_band_id "
                "where b.target_id = :t)"
            ),
            {"t": BENCH_TARGET},
        )
        status = conn.execute(
            text("select population_status from targets where id = :t"), {"t": BENCH_TARGET}
        ).scalar()
        before = conn.execute(digest).one()
    figures = preview_against_membership(engine, repeat=1)
    assert figures.membership_seconds > 0 and figures.preview_seconds > 0
    assert figures.stale_seconds > 0 and figures.ratio is not None
    with engine.connect() as conn:
        assert conn.execute(digest).one() == before
        assert (
            conn.execute(
                text("select population_status from targets where id = :t"), {"t": BENCH_TARGET}
            ).scalar()
            == status
        )
    line = render([ScaleFigures(10, 10, None, preview=figures)])
    assert f"populate --preview {figures.preview_seconds:.2f}s" in line
    assert json.loads(json.dumps(to_json([ScaleFigures(10, 10, None, preview=figures)])))[0][
        "preview"
    ]["preview_over_membership"] == pytest.approx(figures.ratio)
