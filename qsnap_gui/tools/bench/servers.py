"""Where a bench runs: the embedded server (tuned by qsnap), a server the operator names
(``--dsn``), or a throwaway pgserver instance with PostgreSQL's default settings
(``--stock-server``). On each the bench writes only in scratch databases it creates."""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL

from qsnap_gui.domain.errors import ConnectionProblem, UsageError
from qsnap_gui.store.db import server_reason
from qsnap_gui.store.dsn import describe, mask_text, normalize_url
from qsnap_gui.store.schema import REQUIRED_COLUMNS

SHOWN_SETTINGS = ("shared_buffers", "work_mem", "wal_level", "max_wal_size", "server_version")


@dataclass
class BenchServer:
    """A server and a database there to connect to for creating and dropping the scratch ones."""

    label: str
    admin: URL  # psycopg+SQLAlchemy URL of the maintenance database
    settings: dict[str, str] = field(default_factory=dict)

    def _connect(self):
        libpq = self.admin.set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            return psycopg.connect(libpq, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise ConnectionProblem(
                f"cannot connect to {describe(self.admin)}: "
                f"{mask_text(server_reason(exc), self.admin.password)}"
            ) from None

    def url(self, name: str) -> str:
        """The URL of a scratch database, password included (never printed)."""
        return self.admin.set(database=name).render_as_string(hide_password=False)

    def create(self, name: str) -> str:
        """Create the scratch database unless it exists; its URL."""
        with self._connect() as conn:
            if not conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
                conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop(self, name: str) -> None:
        """Drop a scratch database, ending its sessions (PostgreSQL 13 and later)."""
        with self._connect() as conn:
            try:
                conn.execute(
                    sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
                )
            except psycopg.errors.SyntaxError:  # before 13: no FORCE, and no session is left
                conn.execute(sql.SQL("drop database if exists {}").format(sql.Identifier(name)))

    def read_settings(self) -> None:
        with self._connect() as conn:
            self.settings = {
                name: conn.execute("select current_setting(%s)", (name,)).fetchone()[0]
                for name in SHOWN_SETTINGS
            }


def embedded_server() -> BenchServer:
    """The embedded server, sized for bulk work (``qsnap bench`` asks for it at start)."""
    from qsnap_gui.store.embedded import server_url

    server = BenchServer("embedded (qsnap's tuning)", normalize_url(server_url("postgres")))
    server.read_settings()
    return server


def operator_server(raw_url: str) -> BenchServer:
    """The server of ``--dsn``: refused when its database holds Qlarius tables (the bench writes
    only in its own scratch databases), or when the role may not create databases."""
    url = normalize_url(raw_url)
    server = BenchServer(f"{describe(url)} (--dsn)", url)
    with server._connect() as conn:
        found = conn.execute(
            "select string_agg(table_name, ', ' order by table_name) "
            "from information_schema.tables "
            "where table_schema = any(current_schemas(false)) and table_name = any(%s)",
            (list(REQUIRED_COLUMNS),),
        ).fetchone()[0]
        if found:
            raise UsageError(
                f"{describe(url)} holds Qlarius tables ({found}): qsnap bench never writes "
                "there; name a database without them (postgres, say): the bench creates "
                "qsnap_bench_* scratch databases beside it and drops them afterwards"
            )
        role, allowed = conn.execute(
            "select current_user, rolcreatedb or rolsuper from pg_roles "
            "where rolname = current_user"
        ).fetchone()
        if not allowed:
            raise UsageError(
                f"role {role} may not create databases on {describe(url)}: qsnap bench "
                f"creates its scratch databases there (ALTER ROLE {role} CREATEDB, or use "
                "another role)"
            )
    server.read_settings()
    return server


@contextmanager
def bench_server(dsn: str | None, stock: bool) -> Iterator[BenchServer]:
    """The server ``qsnap bench`` runs on: ``--dsn``, ``--stock-server`` or the embedded one."""
    if dsn:
        yield operator_server(dsn)
    elif stock:
        with stock_server() as server:
            yield server
    else:
        yield embedded_server()


@contextmanager
def stock_server() -> Iterator[BenchServer]:
    """A throwaway pgserver instance with PostgreSQL's default settings (what initdb writes,
    nothing of qsnap's sizing) in a temporary folder, stopped and deleted at the end."""
    folder = tempfile.mkdtemp(prefix="qsnap-bench-stock-")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        try:
            server = pgserver.get_server(folder, cleanup_mode="delete")
        except Exception as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise ConnectionProblem(f"the stock PostgreSQL server did not start: {exc}") from None
    try:
        bench = BenchServer(
            "stock pgserver (PostgreSQL defaults)", normalize_url(server.get_uri("postgres"))
        )
        bench.read_settings()
        yield bench
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)
