"""PostgreSQL advisory locks that keep two qsnap processes off the same band or target."""

from __future__ import annotations

from sqlalchemy import Connection, text

BAND = 0x51534E01
TARGET = 0x51534E02


def key(kind: int, object_id: int) -> int:
    """One bigint key: the kind in the high 32 bits, the id in the low 32 bits."""
    return (kind << 32) | (object_id & 0xFFFFFFFF)


def try_lock(conn: Connection, kind: int, object_id: int) -> bool:
    return bool(
        conn.execute(text("select pg_try_advisory_lock(:k)"), {"k": key(kind, object_id)}).scalar()
    )


def unlock(conn: Connection, kind: int, object_id: int) -> None:
    conn.execute(text("select pg_advisory_unlock(:k)"), {"k": key(kind, object_id)})


def held_elsewhere(conn: Connection, kind: int, object_ids: list[int]) -> set[int]:
    """Which of these objects some session (this one included) holds a lock on, without taking any."""
    rows = conn.execute(
        text(
            "select objid::bigint from pg_locks where locktype = 'advisory' and granted "
            "and objsubid = 1 and classid = cast(:kind as oid) and objid = any(cast(:ids as oid[]))"
        ),
        {"kind": kind, "ids": [i & 0xFFFFFFFF for i in object_ids]},
    ).scalars()
    wanted = {i & 0xFFFFFFFF: i for i in object_ids}
    return {wanted[r] for r in rows if r in wanted}
