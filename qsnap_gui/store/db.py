"""Connecting to PostgreSQL: one engine per process, clear errors, the schema check."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, OperationalError

from qsnap_gui.domain.errors import ConnectionProblem, SchemaProblem
from qsnap_gui.store.columns import REQUIRED_COLUMNS
from qsnap_gui.store.dsn import describe, mask_text, mask_url, normalize_url, resolve_url

log = logging.getLogger(__name__)

DEMO_MARKER = "qsnap demo database"
# on target_populations once the demo generator has finished, so an interrupted one is redone
DEMO_COMPLETE = "qsnap demo data complete"


def server_reason(exc: BaseException) -> str:
    """The server's own words for an error, first line, without secrets."""
    orig = getattr(exc, "orig", None) or exc
    message = str(orig).strip().splitlines()
    return message[0] if message else type(orig).__name__


@dataclass
class Database:
    """A connected database: the URL (never printed unmasked) and its engine."""

    url: URL
    engine: Engine
    is_demo: bool = False
    read_only: bool = False
    privileges: set[str] = field(default_factory=set)
    # the server makes every transaction read-only (default_transaction_read_only on the
    # database or role, a standby): then read_only is set too, without --read-only
    server_read_only: bool = False

    @property
    def display(self) -> str:
        return mask_url(self.url)

    @property
    def where(self) -> str:
        return describe(self.url)

    def error_text(self, exc: BaseException) -> str:
        return mask_text(server_reason(exc), self.url)

    def dispose(self) -> None:
        self.engine.dispose()


# a peer that stops answering (a dead server host, a stalled network path) is given up on
# after this many seconds, so that a job fails and retries instead of waiting for ever
TCP_TIMEOUT = 60
TCP_TIMEOUT_ENV = "QSNAP_TCP_TIMEOUT"


def tcp_liveness(url: URL) -> dict[str, object]:
    """libpq's TCP keepalive and user-timeout settings for ``QSNAP_TCP_TIMEOUT`` seconds
    (default a minute): an idle connection is probed after half of it, three probes a sixth
    apart, and data left unacknowledged for all of it ends the connection. Settings the URL
    gives itself win; libpq ignores them all on a Unix socket."""
    raw = os.environ.get(TCP_TIMEOUT_ENV, "").strip()
    try:
        seconds = int(raw) if raw else TCP_TIMEOUT
    except ValueError:
        seconds = 0
    if seconds < 1:
        raise ConnectionProblem(f"{TCP_TIMEOUT_ENV} must be a whole number of seconds (1 or more)")
    settings = {
        "keepalives": 1,
        "keepalives_idle": max(1, seconds // 2),
        "keepalives_interval": max(1, seconds // 6),
        "keepalives_count": 3,
        "tcp_user_timeout": seconds * 1000,
    }
    return {k: v for k, v in settings.items() if k not in url.query}


def make_engine(url: URL, *, read_only: bool = False, pool_size: int = 8) -> Engine:
    connect_args: dict[str, object] = {"connect_timeout": 10, "application_name": "qsnap"}
    connect_args.update(tcp_liveness(url))
    if read_only:
        connect_args["options"] = (
            url.query.get("options", "") + " -c default_transaction_read_only=on"
        ).strip()
        url = url.difference_update_query(["options"])
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=pool_size * 2,
        connect_args=connect_args,
    )


def open_database(
    dsn: str | None = None,
    *,
    check_schema: bool = True,
    read_only: bool = False,
    demo_url: Callable[[], str] | None = None,
) -> Database:
    """Connect to the URL the operator gave, else to the one ``demo_url`` makes ready."""
    raw = resolve_url(dsn)
    is_demo = False
    if raw is None:
        if demo_url is None:
            raise ConnectionProblem(
                "no database URL given (--dsn, QSNAP_DATABASE_URL, DATABASE_URL)"
            )
        raw = demo_url()
        is_demo = True
    url = normalize_url(raw)
    engine = make_engine(url, read_only=read_only)
    db = Database(url=url, engine=engine, is_demo=is_demo, read_only=read_only)
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
            if check_schema:
                verify_schema(conn)
            db.privileges = write_privileges(conn)
            if not read_only and conn.execute(text("show transaction_read_only")).scalar() == "on":
                db.server_read_only = db.read_only = True
            if not is_demo:
                db.is_demo = is_qsnap_demo(conn)
    except OperationalError as exc:
        engine.dispose()
        raise ConnectionProblem(f"cannot connect to {db.where}: {db.error_text(exc)}") from None
    except SchemaProblem:
        engine.dispose()
        raise
    except DBAPIError as exc:
        engine.dispose()
        raise ConnectionProblem(f"database error on {db.where}: {db.error_text(exc)}") from None
    return db


def missing_schema(conn) -> list[str]:
    """What DOMAIN.md needs that the database lacks, as 'table' or 'table.column' names."""
    rows = conn.execute(
        text(
            "select table_name, column_name from information_schema.columns "
            "where table_schema = any(current_schemas(false)) and table_name = any(:tables)"
        ),
        {"tables": list(REQUIRED_COLUMNS)},
    ).all()
    present: dict[str, set[str]] = {}
    for table, column in rows:
        present.setdefault(table, set()).add(column)
    missing: list[str] = []
    for table, columns in REQUIRED_COLUMNS.items():
        if table not in present:
            missing.append(table)
            continue
        missing.extend(f"{table}.{c}" for c in columns if c not in present[table])
    return missing


def verify_schema(conn) -> None:
    missing = missing_schema(conn)
    if missing:
        tables = [m for m in missing if "." not in m]
        columns = [m for m in missing if "." in m]
        parts = []
        if tables:
            parts.append("missing tables: " + ", ".join(tables))
        if columns:
            parts.append("missing columns: " + ", ".join(columns))
        raise SchemaProblem(
            "this database does not hold the Qlarius tables qsnap needs (" + "; ".join(parts) + ")"
        )


def is_qsnap_demo(conn) -> bool:
    marker = conn.execute(
        text("select obj_description(to_regclass('targets'), 'pg_class')")
    ).scalar()
    return marker == DEMO_MARKER


def is_complete_demo(conn) -> bool:
    marker = conn.execute(
        text("select obj_description(to_regclass('target_populations'), 'pg_class')")
    ).scalar()
    return is_qsnap_demo(conn) and marker == DEMO_COMPLETE


_WRITE_CHECKS = {
    "UPDATE target_populations(matching_tags_snapshot)": "select has_column_privilege("
    "'target_populations', 'matching_tags_snapshot', 'UPDATE')",
    "INSERT on target_populations": "select has_table_privilege('target_populations', 'INSERT')",
    "DELETE on target_populations": "select has_table_privilege('target_populations', 'DELETE')",
    "UPDATE targets(population_status)": "select has_column_privilege("
    "'targets', 'population_status', 'UPDATE')",
    # a role that may write the snapshot but not these fails mid-job without them
    "UPDATE target_populations(updated_at)": "select has_column_privilege("
    "'target_populations', 'updated_at', 'UPDATE')",
    "UPDATE targets(last_populated_at, updated_at)": "select has_column_privilege("
    "'targets', 'last_populated_at', 'UPDATE') and has_column_privilege("
    "'targets', 'updated_at', 'UPDATE')",
    "USAGE on the sequence of target_populations.id": "select coalesce(has_sequence_privilege("
    "pg_get_serial_sequence('target_populations', 'id'), 'USAGE'), true)",
}


def _carrier_check(table: str, privilege: str, columns: tuple[str, ...]) -> str:
    """Held, or the table is absent (or lacks the columns that carry a snapshot): a write
    copies a population's snapshot into the table's NULL snapshots only where it exists."""
    rel = f"to_regclass('{table}')"
    held = " and ".join(f"has_column_privilege({rel}, '{c}', '{privilege}')" for c in columns)
    return (
        "select case when (select count(*) from pg_attribute a where a.attrelid = "
        f"{rel} and a.attnum > 0 and not a.attisdropped and a.attname in "
        "('me_file_id', 'target_band_id', 'matching_tags_snapshot')) < 3 then true "
        f"else {held} end"
    )


# a write sets the NULL snapshots of the same (me_file, band)'s offers and ad events
_CARRIER_CHECKS = {
    f"{privilege} {table}({', '.join(columns)})": _carrier_check(table, privilege, columns)
    for table in ("offers", "ad_events")
    for privilege, columns in (
        ("UPDATE", ("matching_tags_snapshot",)),
        ("SELECT", ("me_file_id", "target_band_id", "matching_tags_snapshot")),
    )
}
_WRITE_CHECKS.update(_CARRIER_CHECKS)

# every band job stages its traits, rows and snapshots in temporary tables: without this
# privilege it failed on its first statement, three attempts over, after the operator confirmed
TEMPORARY_PRIVILEGE = "TEMPORARY on the database (GRANT TEMPORARY ON DATABASE <database> TO <role>)"
_WRITE_CHECKS[TEMPORARY_PRIVILEGE] = (
    "select has_database_privilege(current_database(), 'TEMPORARY')"
)


def write_privileges(conn) -> set[str]:
    """Write privileges the role holds, so the window can disable what it may not do."""
    if conn.execute(text("show transaction_read_only")).scalar() == "on":
        return set()
    held = set()
    for name, sql in _WRITE_CHECKS.items():
        try:
            if conn.execute(text(sql)).scalar():
                held.add(name)
        except DBAPIError:
            conn.rollback()
    return held


def missing_privileges(db: Database, *needed: str) -> list[str]:
    return [n for n in needed if n not in db.privileges]


# one row's re-snapshot (the inspector) writes without temporary tables
ROW_SNAPSHOT_PRIVILEGES = (
    "UPDATE target_populations(matching_tags_snapshot)",
    "UPDATE target_populations(updated_at)",
    *_CARRIER_CHECKS,
)
SNAPSHOT_PRIVILEGES = (*ROW_SNAPSHOT_PRIVILEGES, TEMPORARY_PRIVILEGE)
POPULATE_PRIVILEGES = tuple(_WRITE_CHECKS)
DEPOPULATE_PRIVILEGES = (
    "DELETE on target_populations",
    "UPDATE targets(population_status)",
    "UPDATE targets(last_populated_at, updated_at)",
)
