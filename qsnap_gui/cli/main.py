"""The parser and the entry point: exit codes 0 success, 1 a job failed, 2 bad usage,
unknown id, connection or schema problem."""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import re
import sys
import time
from typing import TYPE_CHECKING

from qsnap_gui import __version__
from qsnap_gui.domain.errors import JobFailed, QsnapError
from qsnap_gui.domain.jobs import DEFAULT_BATCH_SIZE, Mode
from qsnap_gui.domain.oban import ALL_STATES
from qsnap_gui.logs import setup_logging
from qsnap_gui.store.embedded import BULK_ME_FILES, use_bulk_sizing

if TYPE_CHECKING:
    from qsnap_gui.store.db import Database


def engine_options(p: argparse.ArgumentParser, *, wait: bool) -> None:
    p.add_argument(
        "--engine",
        choices=["local", "oban"],
        default="local",
        help="local: run here (default); oban: enqueue on the Qlarius workers (oban_jobs)",
    )
    if wait:
        p.add_argument(
            "--wait", action="store_true", help="with --engine oban: follow the jobs to their end"
        )
        p.add_argument(
            "--timeout", type=float, default=0, metavar="S", help="stop waiting after S seconds"
        )
        p.add_argument(
            "--poll", type=float, default=2.0, metavar="S", help="seconds between polls (2)"
        )


class Parser(argparse.ArgumentParser):
    """argparse with every error masked (an argument may be a URL with its password) and a
    "did you mean" for a mistyped choice."""

    def error(self, message: str):
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            options = re.findall(r"'([^']*)'", choice.group(2))
            close = difflib.get_close_matches(choice.group(1), options, n=1)
            if close:
                message += f"; did you mean '{close[0]}'?"
        from qsnap_gui.store.dsn import mask_text

        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {mask_text(message)}\n")


def global_options(p: argparse.ArgumentParser, default) -> None:
    """--dsn, --read-only and -v; on a subcommand their default is SUPPRESS, so that one
    given before the subcommand is not overwritten by the subcommand's default."""
    p.add_argument(
        "--dsn", metavar="URL", default=default, help="database URL (postgres://, ecto://, …)"
    )
    p.add_argument(
        "--read-only",
        action="store_true",
        default=default if default is argparse.SUPPRESS else False,
        help="open the session read-only (browse mode)",
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default if default is argparse.SUPPRESS else False,
        help="print job log lines",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="qsnap",
        description="Inspect and repair Qlarius target population snapshots.",
        epilog="Without --dsn, QSNAP_DATABASE_URL or DATABASE_URL, qsnap uses its embedded "
        "demo database.",
    )
    parser.add_argument("--version", action="version", version=f"qsnap {__version__}")
    global_options(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("targets", help="list targets with population and snapshot coverage")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler="targets:cmd_targets")

    p = sub.add_parser("bands", help="list a target's bands with counts per snapshot shape")
    p.add_argument("target_id", metavar="TARGET_ID")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler="bands:cmd_bands")

    p = sub.add_parser("snapshot", help="snapshot one band or every band of a target")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--band", metavar="ID", help="the band to snapshot")
    which.add_argument("--target", metavar="ID", help="snapshot all its bands in parallel")
    p.add_argument(
        "--mode",
        choices=[m.value for m in Mode],
        default=Mode.MISSING.value,
        help="missing: NULL only (default); repair: NULL and broken; force: every row "
        "(rows already right are left alone)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"rows per transaction (default {DEFAULT_BATCH_SIZE})",
    )
    engine_options(p, wait=True)
    p.add_argument(
        "--yes",
        action="store_true",
        help="with --engine oban: enqueue even when no job of the deprecated snapshot worker "
        "has completed in oban_jobs",
    )
    p.set_defaults(handler="snapshot:cmd_snapshot")

    p = sub.add_parser("populate", help="Refresh Population of a target, snapshots included")
    p.add_argument("target_id", metavar="TARGET_ID")
    p.add_argument(
        "--resume",
        action="store_true",
        help="finish a stuck target: snapshot stage and status only",
    )
    p.add_argument(
        "--preview",
        action="store_true",
        help="show what a refresh would change (kept, added, removed, moved, offers left) "
        "and write nothing",
    )
    p.add_argument("--json", action="store_true", help="with --preview: machine-readable output")
    p.add_argument(
        "--stale",
        action="store_true",
        help="with --preview: also count kept snapshots that are stale (it builds each one: "
        "at a million rows it costs several times the rest)",
    )
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N")
    engine_options(p, wait=True)
    p.set_defaults(handler="populate:cmd_populate")

    p = sub.add_parser("depopulate", help="delete a target's populations")
    p.add_argument("target_id", metavar="TARGET_ID")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(handler="populate:cmd_depopulate")

    p = sub.add_parser("inspect", help="why a me_file sits in each band, snapshot by snapshot")
    p.add_argument("me_file_id", metavar="ME_FILE_ID")
    p.add_argument("--band", metavar="ID", help="only this band")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--offers",
        action="store_true",
        help="also its newest 200 offers and ad events, each compared with its population",
    )
    p.add_argument(
        "--offset", metavar="N", default="0", help="with --offers: skip the newest N of each"
    )
    p.set_defaults(handler="inspect:cmd_inspect")

    p = sub.add_parser(
        "backfill", help="find and fix missing, broken or stale snapshots across targets"
    )
    p.add_argument(
        "--target",
        metavar="ID",
        nargs="+",
        action="extend",
        help="only these targets (default: all)",
    )
    p.add_argument(
        "--include",
        default="missing,broken",
        metavar="LIST",
        help="categories to fix, comma-separated: missing, broken, stale (default "
        "missing,broken; broken includes missing, stale includes both and rebuilds every row "
        "of a band with stale rows, writing those that changed)",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--dry-run", action="store_true", help="scan and report, change nothing")
    what.add_argument("--yes", action="store_true", help="scan, then fix what the scan found")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N")
    p.add_argument(
        "--workers", type=int, default=4, metavar="N", help="band jobs at a time (default 4)"
    )
    engine_options(p, wait=True)
    p.set_defaults(handler="backfill:cmd_backfill")

    p = sub.add_parser(
        "oban-jobs",
        help="list the snapshot, population and backfill jobs in oban_jobs; retry or cancel one",
        description="Oban schema versions 12 to 14 are known; every state of the version found "
        "is listed (version 14 adds suspended).",
    )
    p.add_argument(
        "--state", choices=list(ALL_STATES), action="append", help="only this state (repeatable)"
    )
    p.add_argument(
        "--worker",
        action="append",
        metavar="W",
        help="snapshot, populate, backfill or a worker name (repeatable; default those three "
        "Qlarius workers)",
    )
    action = p.add_mutually_exclusive_group()
    action.add_argument(
        "--retry",
        type=int,
        metavar="JOB_ID",
        help="run a discarded or cancelled job again, as Oban.retry_job does (only those: "
        "Oban also retries completed, retryable and scheduled jobs, qsnap does not)",
    )
    action.add_argument(
        "--cancel",
        type=int,
        metavar="JOB_ID",
        help="cancel a job not yet ended, executing included, as Oban.cancel_job does: the row "
        "becomes cancelled, then its node is asked to kill it",
    )
    p.add_argument("--limit", type=int, default=200, metavar="N", help="newest N (default 200)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler="oban:cmd_oban_jobs")

    p = sub.add_parser("demo", help="create the schema and demo data in an empty database")
    p.add_argument("--me-files", type=int, default=10_000, metavar="N")
    p.add_argument("--seed", type=int, default=42, metavar="S")
    p.add_argument(
        "--reset", action="store_true", help="recreate the demo in a database qsnap created"
    )
    p.set_defaults(handler="tools:cmd_demo", schema_free=True)

    p = sub.add_parser(
        "bench",
        help="benchmark qsnap on scratch databases of the embedded server, a server you "
        "name (--dsn) or a default-settings one (--stock-server)",
        description="Times the original worker's port, qsnap and the write floor on the same "
        "rows, a stale repair against a force re-snapshot, populate and the views; with "
        "--many-targets, backfill and targets on thousands of small targets. It writes only "
        "in qsnap_bench_* databases it creates (and drops unless --keep) on its server: the "
        "embedded one by default, sized for bulk work. --dsn URL benches on that URL's "
        "server instead: URL names a database there without Qlarius tables (refused "
        "otherwise) and its role needs CREATEDB; QSNAP_DATABASE_URL and DATABASE_URL are "
        "never used.",
    )
    p.add_argument(
        "--stock-server",
        action="store_true",
        help="bench on a throwaway PostgreSQL with its default settings (shared_buffers "
        "128MB, work_mem 4MB, wal_level replica), started in a temporary folder and deleted",
    )
    p.add_argument(
        "--scale",
        type=int,
        nargs="+",
        default=[10_000, 100_000],
        metavar="N",
        help="me_files per scale (default 10000 100000); target 1's three bands hold them all",
    )
    p.add_argument(
        "--tags-per-me-file",
        type=int,
        default=40,
        metavar="N",
        help="mean tags per me_file of the world (default 40; 60 is a long-time user's)",
    )
    p.add_argument(
        "--bands",
        choices=["skewed", "equal"],
        default="skewed",
        help="skewed (default): one band holds ~90%% of the rows; equal: three bands of a "
        "third each",
    )
    p.add_argument(
        "--many-targets",
        type=int,
        metavar="N",
        help="instead: N targets x 3 bands x 10 populations (3 NULL, 4 broken, 3 good per "
        "band); times backfill --dry-run, backfill --yes and targets, each in its own "
        "process, and checks every row against a reference",
    )
    p.add_argument("--repeat", type=int, default=1, metavar="R", help="runs per strategy (median)")
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the scratch databases (the next bench reuses them) instead of dropping them",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler="tools:cmd_bench", no_database=True, bulk_server="qsnap bench")

    p = sub.add_parser(
        "server",
        help="the embedded PostgreSQL server: status, stop, path",
        description="The embedded server starts with the first qsnap process that needs it "
        "and stops a minute after the last one exits (QSNAP_SERVER_LINGER seconds).",
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=["status", "stop", "path"],
        default="status",
        help="status (default): running or not, pid, port, sizes; stop; path: its data folder",
    )
    p.add_argument("--force", action="store_true", help="stop even while qsnap processes use it")
    p.add_argument("--json", action="store_true", help="machine-readable status")
    p.set_defaults(handler="server:cmd_server", no_database=True)

    for command in sub.choices.values():
        global_options(command, argparse.SUPPRESS)
    return parser


def size_embedded_server(args: argparse.Namespace) -> None:
    """Bulk sizing for the embedded server: for ``bench``, and for a demo of more than
    BULK_ME_FILES me_files made there; every other use gets the modest desktop sizing."""
    reason = getattr(args, "bulk_server", None)
    if args.command == "demo" and args.me_files > BULK_ME_FILES:
        from qsnap_gui.store.dsn import resolve_url

        if resolve_url(args.dsn) is None:
            reason = f"a demo of {args.me_files:,} me_files"
    if reason:
        use_bulk_sizing(reason)


def show_server_notices() -> None:
    """The embedded server's warnings (its sizing for a bench, a slow recovery) are for the
    operator: on stderr as well as in the log file, once however often main() runs."""
    server_log = logging.getLogger("qsnap_gui.store.embedded")
    if not any(getattr(h, "qsnap_notices", False) for h in server_log.handlers):
        notices = logging.StreamHandler(sys.stderr)
        notices.setLevel(logging.WARNING)
        notices.setFormatter(logging.Formatter("qsnap: %(message)s"))
        notices.qsnap_notices = True
        server_log.addHandler(notices)


def demo_database_url() -> str:
    """The embedded demo database, made ready on first use (its generator is imported only
    when no URL was given)."""
    from qsnap_gui.tools.demo import ensure_demo_database

    return ensure_demo_database()


def command_handler(args: argparse.Namespace):
    """The subcommand's function, from its "module:function" name: a command imports only
    its own module (importing them all cost half a second of every command's start)."""
    module, function = args.handler.split(":")
    return getattr(importlib.import_module(f"qsnap_gui.cli.{module}"), function)


def _database_error() -> type[Exception]:
    """SQLAlchemy's database error, imported only when an exception is being matched: a
    command without a database (``qsnap server``) starts without SQLAlchemy."""
    from sqlalchemy.exc import DBAPIError

    return DBAPIError


def main(argv: list[str] | None = None) -> int:
    setup_logging("qsnap")
    show_server_notices()
    parser = build_parser()
    args = parser.parse_args(argv)
    db: Database | None = None
    started = time.monotonic()
    try:
        handler = command_handler(args)
        size_embedded_server(args)
        if getattr(args, "no_database", False):
            return handler(args, None)
        from qsnap_gui.store.db import open_database

        db = open_database(
            args.dsn,
            check_schema=not getattr(args, "schema_free", False),
            read_only=args.read_only,
            demo_url=demo_database_url,
        )
        return handler(args, db)
    except JobFailed as exc:
        print(f"qsnap: {exc}", file=sys.stderr)
        return 1
    except QsnapError as exc:
        print(f"qsnap: {exc}", file=sys.stderr)
        return exc.exit_code
    except _database_error() as exc:
        from qsnap_gui.store.db import server_reason
        from qsnap_gui.store.dsn import mask_text

        where = db.where if db else "the database"
        secret = db.url if db else None
        print(
            f"qsnap: database error on {where}: {mask_text(server_reason(exc), secret)}",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(f"qsnap: interrupted after {time.monotonic() - started:.1f}s", file=sys.stderr)
        return 130
    finally:
        if db is not None:
            db.dispose()
