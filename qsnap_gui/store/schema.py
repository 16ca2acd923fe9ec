"""DDL for databases qsnap creates itself (the demo); never run anywhere else."""

from __future__ import annotations

from sqlalchemy import Connection, text

from qsnap_gui.domain.errors import UsageError
from qsnap_gui.store.db import DEMO_MARKER, is_qsnap_demo
from qsnap_gui.store.tables import REQUIRED_COLUMNS, Base


def has_qlarius_tables(conn: Connection) -> bool:
    found = conn.execute(
        text(
            "select count(*) from information_schema.tables "
            "where table_schema = any(current_schemas(false)) and table_name = any(:t)"
        ),
        {"t": list(REQUIRED_COLUMNS)},
    ).scalar()
    return bool(found)


def create_demo_schema(conn: Connection, *, reset: bool = False) -> None:
    """Create the tables in an empty database, or recreate them in a qsnap demo database."""
    if has_qlarius_tables(conn):
        if not reset:
            raise UsageError(
                "this database already has Qlarius tables; qsnap demo only fills an empty "
                "database (use --reset on a database qsnap created)"
            )
        if not is_qsnap_demo(conn):
            raise UsageError(
                "refusing --reset: this database was not created by qsnap demo "
                "(qsnap never runs DDL on an operator's database)"
            )
        Base.metadata.drop_all(conn)
    Base.metadata.create_all(conn)
    conn.execute(text(f"comment on table targets is '{DEMO_MARKER}'"))
