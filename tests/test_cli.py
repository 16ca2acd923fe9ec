"""The ``qsnap`` command line: output, exit codes and one-line errors, on real databases."""

from __future__ import annotations

import argparse
import json

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from qsnap_gui.cli import main
from qsnap_gui.domain.codec import SHAPES


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_targets_json_counts_match_sql(db, db_url, capsys):
    code, out, err = run(capsys, "--dsn", db_url, "targets", "--json")
    assert code == 0, err
    targets = {t["id"]: t for t in json.loads(out)}
    with db.engine.connect() as conn:
        expected = dict(
            conn.execute(
                text(
                    "select t.id, count(tp.id) from targets t left join target_bands b "
                    "on b.target_id = t.id left join target_populations tp "
                    "on tp.target_band_id = b.id group by t.id"
                )
            ).all()
        )
        missing = dict(
            conn.execute(
                text(
                    "select b.target_id, count(*) from target_populations tp join target_bands b "
                    "on b.id = tp.target_band_id where tp.matching_tags_snapshot is null "
                    "group by 1"
                )
            ).all()
        )
    assert {i: t["population"] for i, t in targets.items()} == expected
    assert {i: t["missing_snapshots"] for i, t in targets.items() if t["missing_snapshots"]} == (
        missing
    )
    assert [t["stuck"] for t in targets.values()].count(True) == 1


def test_targets_table_is_readable(db_url, capsys):
    code, out, _ = run(capsys, "--dsn", db_url, "targets")
    assert code == 0
    header = out.splitlines()[0].split()
    assert header[:3] == ["id", "title", "status"]
    assert "stuck (populating, no job running)" in out


def test_bands_json_labels_and_shapes(db, db_url, capsys):
    code, out, err = run(capsys, "--dsn", db_url, "bands", "1", "--json")
    assert code == 0, err
    bands = json.loads(out)
    assert bands[0]["label"] == "Bullseye" and bands[0]["is_bullseye"]
    assert [b["label"] for b in bands[1:]] == [f"Ring {i}" for i in range(1, len(bands))]
    counts = [len(b["trait_groups"]) for b in bands]
    assert counts == sorted(counts, reverse=True)
    with db.engine.connect() as conn:
        for band in bands:
            population = conn.execute(
                text("select count(*) from target_populations where target_band_id = :b"),
                {"b": band["band_id"]},
            ).scalar()
            assert band["population"] == population == sum(band["shapes"].values())
            assert set(band["shapes"]) == {str(s) for s in SHAPES}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bands", "999"], "target 999 does not exist"),
        (["bands", "abc"], "target id must be a whole number, got 'abc'"),
        (["snapshot", "--band", "999"], "band 999 does not exist"),
        (["snapshot", "--target", "1; drop table traits"], "target id must be a whole number"),
        (["inspect", "99999999"], "me_file 99999999 does not exist"),
        (["populate", "-5"], "target id must be a positive number"),
    ],
)
def test_bad_ids_exit_2_with_one_line(db_url, capsys, args, message):
    code, out, err = run(capsys, "--dsn", db_url, *args)
    assert code == 2
    assert err.strip().startswith("qsnap: ") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_connection_problems_are_one_masked_line(db_url, capsys):
    url = make_url(db_url).set(database="no_such_db", password="s3cret-pw")
    code, _, err = run(capsys, "--dsn", url.render_as_string(hide_password=False), "targets")
    assert code == 2
    assert "cannot connect to" in err and "no_such_db" in err and "does not exist" in err
    assert "s3cret-pw" not in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "--dsn", "mysql://u:p@h/db", "targets")
    assert code == 2 and "unsupported database URL scheme 'mysql'" in err


def test_schema_problems_name_what_is_missing(empty_db_url, capsys):
    code, _, err = run(capsys, "--dsn", empty_db_url, "targets")
    assert code == 2 and "missing tables: me_file_tags, me_files, target_band_trait_groups" in err
    assert run(capsys, "--dsn", empty_db_url, "demo", "--me-files", "200")[0] == 0
    from qsnap_gui.store.db import open_database

    db = open_database(empty_db_url)
    with db.engine.begin() as conn:
        conn.execute(text("alter table targets drop column population_status"))
    db.dispose()
    code, _, err = run(capsys, "--dsn", empty_db_url, "targets")
    assert code == 2 and "missing columns: targets.population_status" in err


def test_demo_refuses_foreign_tables_and_resets_its_own(empty_db_url, capsys):
    assert run(capsys, "--dsn", empty_db_url, "demo", "--me-files", "300", "--seed", "3")[0] == 0
    code, _, err = run(capsys, "--dsn", empty_db_url, "demo", "--me-files", "300")
    assert code == 2 and "already has Qlarius tables" in err
    from qsnap_gui.store.db import open_database

    db = open_database(empty_db_url)
    with db.engine.begin() as conn:
        conn.execute(text("comment on table targets is 'production'"))
    code, _, err = run(capsys, "--dsn", empty_db_url, "demo", "--reset")
    assert code == 2 and "was not created by qsnap demo" in err
    with db.engine.begin() as conn:
        conn.execute(text("comment on table targets is 'qsnap demo database'"))
        conn.execute(
            text(
                "insert into traits (id, trait_name, input_type, display_order, is_active, added_date, modified_date, added_by, modified_by) values (999999, 'x', 'single_select', 1, true, now(), now(), 1, 1)"
            )
        )
    assert run(capsys, "--dsn", empty_db_url, "demo", "--me-files", "300", "--reset")[0] == 0
    with db.engine.connect() as conn:
        assert conn.execute(text("select count(*) from traits where id = 999999")).scalar() == 0
        # 300 generated me_files, and the few hand-made ones of the production cases' target
        assert 300 < conn.execute(text("select count(*) from me_files")).scalar() < 350
        assert conn.execute(text("select count(*) from targets where title is null")).scalar()
    db.dispose()


def test_demo_is_deterministic_for_a_seed(create_db, capsys):
    from qsnap_gui.store.db import open_database

    digests = []
    for _ in range(2):
        url = create_db("seeded")
        assert run(capsys, "--dsn", url, "demo", "--me-files", "400", "--seed", "11")[0] == 0
        db = open_database(url)
        with db.engine.connect() as conn:
            digests.append(
                conn.execute(
                    text(
                        "select md5(string_agg(x, '|' order by x)) from ("
                        "select me_file_id || ':' || trait_id || ':' || coalesce(tag_value, '~') x "
                        "from me_file_tags union all "
                        "select target_band_id || ':' || me_file_id || ':' || "
                        "coalesce(matching_tags_snapshot::text, '~') from target_populations) s"
                    )
                ).scalar()
            )
        db.dispose()
    assert digests[0] == digests[1]


def test_demo_holds_every_shape_and_tag_counts_in_range(db):
    with db.engine.connect() as conn:
        low, high, zips = conn.execute(
            text(
                "select min(c), max(c), min(z) from (select me_file_id, count(*) c, "
                "count(*) filter (where t.parent_trait_id = (select id from traits "
                "where trait_name = 'Home Zip Code')) z from me_file_tags mt join traits t "
                "on t.id = mt.trait_id group by 1) x"
            )
        ).one()
    assert low >= 15 and high <= 65 and zips == 1


def test_snapshot_target_fills_then_writes_nothing(fresh_db, capsys):
    url = fresh_db.url.render_as_string(hide_password=False)
    code, out, err = run(capsys, "--dsn", url, "snapshot", "--target", "2")
    assert code == 0, err
    written = int(out.split("total: ")[1].split()[0])
    assert written > 0 and "band " in err and "batch 1/" in err
    with fresh_db.engine.connect() as conn:
        assert (
            conn.execute(
                text(
                    "select count(*) from target_populations tp join target_bands b "
                    "on b.id = tp.target_band_id where b.target_id = 2 "
                    "and tp.matching_tags_snapshot is null"
                )
            ).scalar()
            == 0
        )
    code, out, _ = run(capsys, "--dsn", url, "snapshot", "--target", "2")
    assert code == 0 and "total: 0 rows written" in out


def test_embedded_tuning_compares_sizes_in_bytes_so_the_server_restarts_only_once(pg_admin_url):
    """PostgreSQL shows 8192MB as "8GB": compared as text, every start would restart it."""
    import psycopg

    from qsnap_gui.store.embedded import _buffers_mb, _differs

    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        kb = conn.execute(
            "select pg_size_bytes(current_setting('shared_buffers')) / 1024"
        ).fetchone()[0]
        assert not _differs(conn, "shared_buffers", f"{kb}kB")
        assert _differs(conn, "shared_buffers", f"{kb + 1024}kB")
        level = conn.execute("show wal_level").fetchone()[0]
        assert not _differs(conn, "wal_level", level)
        assert _differs(conn, "wal_level", "logical" if level != "logical" else "replica")
    assert 512 <= _buffers_mb() <= 8192


def test_an_interrupted_demo_is_made_again_and_a_finished_one_left_alone(create_db):
    from qsnap_gui.store.db import make_engine
    from qsnap_gui.store.dsn import normalize_url
    from qsnap_gui.tools.demo import DemoSpec, generate_demo, seed_demo

    engine = make_engine(normalize_url(create_db("interrupted")), pool_size=2)
    spec = DemoSpec(me_files=300, seed=3, zips=50)
    generate_demo(engine, spec)

    def populations() -> int:
        with engine.connect() as conn:
            return conn.execute(text("select count(*) from target_populations")).scalar_one()

    complete = populations()
    assert complete > 0 and not seed_demo(engine, spec)
    with engine.begin() as conn:
        # as if the generator stopped after the tags, before the populations were committed
        conn.execute(text("delete from target_populations"))
        conn.execute(text("comment on table target_populations is null"))
    assert seed_demo(engine, spec) and populations() == complete
    assert not seed_demo(engine, spec)
    with engine.begin() as conn:
        conn.execute(text("comment on table targets is null"))
        conn.execute(text("comment on table target_populations is null"))
    assert not seed_demo(engine, spec), "tables qsnap did not create are never touched"
    engine.dispose()


# --- global options anywhere, masked argparse errors, "did you mean" -----------------------------


def test_global_options_are_accepted_before_or_after_the_subcommand(db_url, capsys):
    from qsnap_gui.cli.main import build_parser

    before = run(capsys, "--dsn", db_url, "targets", "--json")
    after = run(capsys, "targets", "--json", "--dsn", db_url)
    assert before[0] == after[0] == 0, after[2]
    assert json.loads(before[1]) == json.loads(after[1])

    parse = build_parser().parse_args
    for argv in (["-v", "--read-only", "targets"], ["targets", "-v", "--read-only"]):
        args = parse(argv)
        assert args.verbose and args.read_only and args.dsn is None, argv
    plain = parse(["targets"])
    assert not plain.verbose and not plain.read_only and plain.dsn is None
    assert parse(["--dsn", "postgres://a/x", "targets", "--dsn", "postgres://b/y"]).dsn == (
        "postgres://b/y"
    )

    # --read-only after the subcommand is honoured: the write is refused before it starts
    code, _, err = run(capsys, "depopulate", "1", "--yes", "--dsn", db_url, "--read-only")
    assert code == 2 and "connect without --read-only" in err


def test_dsn_after_the_subcommand_with_a_password_is_used_and_never_printed(capsys):
    """The issue's command line: it used to print the password in "unrecognized arguments"."""
    code, out, err = run(capsys, "targets", "--dsn", "postgres://u:S3cret@nohost.invalid/db")
    assert code == 2 and out == ""
    assert "cannot connect to" in err and "nohost.invalid" in err
    assert "S3cret" not in err and "unrecognized" not in err


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["targets", "--dns", "postgres://u:S3cret@host/db"], "--dns postgres://u:***@host/db"),
        (["oban-jobs", "postgresql://:S3cret@host/db"], "postgresql://:***@host/db"),
        (["postgres://u:S3cret@host/db", "targets"], "invalid choice: 'postgres://u:***@host/db'"),
        (["bands", "1", "host=h password=S3cret"], "password=***"),
    ],
)
def test_every_argparse_error_masks_passwords(capsys, argv, shown):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    _, err = capsys.readouterr()
    assert exit_.value.code == 2
    assert shown in err and "S3cret" not in err


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["tragets"], "did you mean 'targets'?"),
        (["bacfill", "--dry-run"], "did you mean 'backfill'?"),
        (["snapshot", "--band", "1", "--mode", "forse"], "did you mean 'force'?"),
    ],
)
def test_a_mistyped_choice_gets_did_you_mean(capsys, argv, hint):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    _, err = capsys.readouterr()
    assert exit_.value.code == 2 and err.strip().endswith(hint)


def test_a_choice_like_nothing_gets_no_guess(capsys):
    with pytest.raises(SystemExit):
        main(["zzzz"])
    assert "did you mean" not in capsys.readouterr().err


def test_every_subcommand_has_help_and_a_handler_that_imports(capsys):
    """Handlers are named by "module:function" and imported on dispatch: a misspelt one would
    fail only when its command runs, so each is resolved here."""
    from qsnap_gui.cli.main import build_parser, command_handler

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert len(sub.choices) >= 11
    for name, command in sub.choices.items():
        handler = command_handler(argparse.Namespace(handler=command.get_default("handler")))
        assert callable(handler) and handler.__name__.startswith("cmd_"), name
        with pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        assert exit_.value.code == 0, name
        assert capsys.readouterr().out.startswith(f"usage: qsnap {name}"), name


# --- wording, display width, empty targets ---------------------------------------------------


def test_summary_wording_for_no_band_and_for_one_row(capsys):
    from qsnap_gui.cli.output import print_summary
    from qsnap_gui.domain.words import plural
    from qsnap_gui.engine.snapshots import BandResult, JobState

    assert print_summary([]) == 0
    assert capsys.readouterr().out == "total: 0 rows written, no bands\n"
    assert print_summary([BandResult(7, JobState.SUCCEEDED, rows_written=1, elapsed=0.5)]) == 0
    out = capsys.readouterr().out
    assert "band 7: succeeded, 1 row written in 0.50s" in out
    assert "total: 1 row written, 1 of 1 bands succeeded" in out
    assert [plural(1, "batch", "batches"), plural(2, "batch", "batches")] == [
        "1 batch",
        "2 batches",
    ]


def test_display_width_counts_wide_characters_twice_and_combining_marks_not_at_all():
    from qsnap_gui.cli.output import display_width

    assert display_width("Home") == 4
    assert display_width("東京") == 4
    assert display_width("Cafe\u0301") == 4  # e + combining acute
    assert display_width("ｔｅｓｔ") == 8  # fullwidth Latin
    assert display_width("a\u200bb") == 2  # zero-width space


def _column_starts(line: str, values: list[str]) -> list[int]:
    """The display column where each value begins on a table line."""
    from qsnap_gui.cli.output import display_width

    starts, at = [], 0
    for value in values:
        at = line.index(value, at)
        starts.append(display_width(line[:at]))
        at += len(value)
    return starts


def test_table_columns_line_up_with_wide_and_combining_characters():
    from qsnap_gui.cli.output import table

    rows = [[1, "東京ターゲット", "idle"], [22, "Cafe\u0301 Rennes", "populated"], [3, None, "x"]]
    lines = table(["id", "title", "status"], rows).splitlines()
    assert _column_starts(lines[0], ["id", "title", "status"]) == [0, 4, 20]
    assert _column_starts(lines[2], ["1", "東京ターゲット", "idle"]) == [0, 4, 20]
    assert _column_starts(lines[3], ["22", "Cafe\u0301 Rennes", "populated"]) == [0, 4, 20]
    assert _column_starts(lines[4], ["3", "x"]) == [0, 20], "a NULL cell is blank, not 'None'"


def test_targets_table_lines_up_wide_titles_and_json_coverage_is_null_when_empty(fresh_db, capsys):
    url = fresh_db.url.render_as_string(hide_password=False)
    with fresh_db.engine.begin() as conn:
        conn.execute(text("update targets set title = '東京 Cafe\u0301 対象' where id = 1"))
        conn.execute(
            text(
                "insert into targets (id, title, created_at, updated_at) "
                "values (900, 'Nobody yet', now(), now())"
            )
        )
    code, out, err = run(capsys, "--dsn", url, "targets")
    assert code == 0, err
    header, _, *rows = out.splitlines()
    status_column = _column_starts(header, ["status"])[0]
    first = next(r for r in rows if r.startswith("1 "))
    status = first.split()[first.split().index("対象") + 1]
    assert _column_starts(first, ["東京 Cafe\u0301 対象", status])[1] == status_column
    assert "None" not in out
    code, out, err = run(capsys, "--dsn", url, "targets", "--json")
    assert code == 0, err
    coverage = {t["id"]: t["coverage"] for t in json.loads(out)}
    assert coverage[900] is None
    assert coverage[1] is not None and 0 <= coverage[1] <= 1


def test_titles_with_control_characters_are_escaped_in_tables(db_url, capsys):
    """A title holding ESC[2K and a carriage return must not rewrite the terminal's line."""
    from sqlalchemy import create_engine

    engine = create_engine(db_url)
    with engine.begin() as conn:
        original = conn.execute(text("select title from targets where id = 1")).scalar()
        conn.execute(text("update targets set title = :t where id = 1"), {"t": "evil\x1b[2K\rok"})
    try:
        assert main(["--dsn", db_url, "targets"]) == 0
        out = capsys.readouterr().out
        assert "\x1b" not in out and "\r" not in out
        assert "evil\\x1b[2K\\rok" in out
    finally:
        with engine.begin() as conn:
            conn.execute(text("update targets set title = :t where id = 1"), {"t": original})
        engine.dispose()


def test_an_id_outside_postgres_integer_range_is_refused_clearly(db_url, capsys):
    assert main(["--dsn", db_url, "inspect", str(2**31)]) == 2
    assert "up to 2147483647" in capsys.readouterr().err
