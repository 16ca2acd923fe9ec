"""Whether this session may write: one answer for the actions, the wizard and the inspector."""

from __future__ import annotations

from qsnap_gui.store.db import Database, missing_privileges


def write_block(database: Database | None, privileges: tuple[str, ...]) -> str | None:
    """Why this session may not write what ``privileges`` cover, or None."""
    if database is None:
        return "not connected"
    if database.read_only:
        return "connected read-only"
    missing = missing_privileges(database, *privileges)
    return f"your database role lacks {', '.join(missing)}" if missing else None
