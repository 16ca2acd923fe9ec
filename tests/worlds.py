"""Small hand-made or generated worlds, and plain-Python references read back from a database.

The references use the codec's builder and simple selects, sharing no SQL with the engines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Engine, text

from qsnap_gui.domain.codec import TraitInfo
from qsnap_gui.engine.snapshots import GROUP_SESSION
from qsnap_gui.store.schema import create_demo_schema

T0 = datetime(2025, 1, 1, 12, 0, 0)

TABLES = (
    "ad_events",
    "offers",
    "target_populations",
    "target_band_trait_groups",
    "trait_group_traits",
    "trait_groups",
    "target_bands",
    "targets",
    "me_file_tags",
    "me_files",
    "traits",
)


@dataclass
class World:
    """traits: (id, name, display_order, parent); tags: (me_file, trait, value);
    bands: (id, target, is bullseye, group ids); populations: (band, me_file);
    offers and ad_events: (me_file, band, snapshot as JSON text or None), ids from 1 in order.
    An ad event names the offer of its (me_file, band) if there is one, and its band's target.
    """

    traits: list[tuple[int, str, int, int | None]] = field(default_factory=list)
    me_files: list[int] = field(default_factory=list)
    tags: list[tuple[int, int, str | None]] = field(default_factory=list)
    groups: dict[int, list[int]] = field(default_factory=dict)
    bands: list[tuple[int, int, bool, list[int]]] = field(default_factory=list)
    populations: list[tuple[int, int]] = field(default_factory=list)
    offers: list[tuple[int, int, str | None]] = field(default_factory=list)
    ad_events: list[tuple[int, int, str | None]] = field(default_factory=list)


def ensure_schema(engine: Engine) -> None:
    with engine.begin() as conn:
        exists = conn.execute(text("select to_regclass('targets')")).scalar()
        if not exists:
            create_demo_schema(conn)


def load_world(engine: Engine, world: World) -> None:
    """Replace every row with the world's (tag ids are their position, from 1)."""
    ensure_schema(engine)
    audit = {"a": T0}
    with engine.begin() as conn:
        conn.execute(text(f"truncate {', '.join(TABLES)} restart identity"))
        for tid, name, order, parent in world.traits:
            conn.execute(
                text(
                    "insert into traits (id, trait_name, input_type, display_order, "
                    "parent_trait_id, added_date, modified_date, added_by, modified_by) "
                    "values (:i, :n, 'multi_select', :o, :p, :a, :a, 1, 1)"
                ),
                {"i": tid, "n": name, "o": order, "p": parent, **audit},
            )
        for mid in world.me_files:
            conn.execute(
                text(
                    "insert into me_files (id, display_name, created_at, updated_at) "
                    "values (:i, :n, :a, :a)"
                ),
                {"i": mid, "n": f"me {mid}", **audit},
            )
        for n, (mid, trait_id, value) in enumerate(world.tags, start=1):
            conn.execute(
                text(
                    "insert into me_file_tags (id, me_file_id, trait_id, tag_value, added_date, "
                    "modified_date, added_by, modified_by) values (:id, :m, :t, :v, :a, :a, 1, 1)"
                ),
                {"id": n, "m": mid, "t": trait_id, "v": value, **audit},
            )
        for gid, trait_ids in world.groups.items():
            conn.execute(
                text(
                    "insert into trait_groups (id, title, created_at, updated_at) "
                    "values (:g, :t, :a, :a)"
                ),
                {"g": gid, "t": f"group {gid}", **audit},
            )
            for trait_id in trait_ids:
                conn.execute(
                    text(
                        "insert into trait_group_traits (trait_group_id, trait_id, created_at, "
                        "updated_at) values (:g, :t, :a, :a)"
                    ),
                    {"g": gid, "t": trait_id, **audit},
                )
        for target_id in sorted({b[1] for b in world.bands}):
            conn.execute(
                text(
                    "insert into targets (id, title, population_status, created_at, updated_at) "
                    "values (:t, :title, 'not_populated', :a, :a)"
                ),
                {"t": target_id, "title": f"target {target_id}", **audit},
            )
        for band_id, target_id, bullseye, group_ids in world.bands:
            conn.execute(
                text(
                    "insert into target_bands (id, target_id, title, is_bullseye, created_at, "
                    "updated_at) values (:b, :t, :title, :e, :a, :a)"
                ),
                {
                    "b": band_id,
                    "t": target_id,
                    "title": f"band {band_id}",
                    "e": "1" if bullseye else "0",
                    **audit,
                },
            )
            for gid in group_ids:
                conn.execute(
                    text(
                        "insert into target_band_trait_groups (target_band_id, trait_group_id, "
                        "created_at, updated_at) values (:b, :g, :a, :a)"
                    ),
                    {"b": band_id, "g": gid, **audit},
                )
        for band_id, mid in world.populations:
            conn.execute(
                text(
                    "insert into target_populations (target_band_id, me_file_id, created_at, "
                    "updated_at) values (:b, :m, :a, :a)"
                ),
                {"b": band_id, "m": mid, **audit},
            )
        target_of = {b[0]: b[1] for b in world.bands}
        offer_of: dict[tuple[int, int], int] = {}
        for n, (mid, band_id, snapshot) in enumerate(world.offers, start=1):
            conn.execute(
                text(
                    "insert into offers (id, campaign_id, me_file_id, media_run_id, "
                    "media_piece_id, ad_phase_count_to_complete, target_band_id, offer_amt, "
                    "marketer_cost_amt, created_at, updated_at, matching_tags_snapshot) "
                    "values (:id, 1, :m, :id, 1, 3, :b, 0.5, 0.75, :a, :a, cast(:s as jsonb))"
                ),
                {"id": n, "m": mid, "b": band_id, "s": snapshot, **audit},
            )
            offer_of.setdefault((mid, band_id), n)
        for n, (mid, band_id, snapshot) in enumerate(world.ad_events, start=1):
            conn.execute(
                text(
                    "insert into ad_events (id, me_file_id, target_id, target_band_id, offer_id, "
                    "created_at, updated_at, matching_tags_snapshot) "
                    "values (:id, :m, :t, :b, :o, :a, :a, cast(:s as jsonb))"
                ),
                {
                    "id": n,
                    "m": mid,
                    "t": target_of.get(band_id),
                    "b": band_id,
                    "o": offer_of.get((mid, band_id)),
                    "s": snapshot,
                    **audit,
                },
            )


def read_traits(conn: Connection) -> dict[int, TraitInfo]:
    rows = conn.execute(text("select id, trait_name, display_order, parent_trait_id from traits"))
    return {r[0]: TraitInfo(r[0], r[1], r[2], r[3]) for r in rows}


def reference_snapshots(conn: Connection, band_id: int) -> dict[int, dict]:
    """What DOMAIN.md says every population row of the band should hold, built in Python."""
    from tests.reference import band_snapshot_builder

    build = band_snapshot_builder(conn)
    pops = conn.execute(
        text("select id, me_file_id from target_populations where target_band_id = :b"),
        {"b": band_id},
    ).all()
    return {pid: build(band_id, mid) for pid, mid in pops}


def stored_snapshots(conn: Connection, band_id: int) -> dict[int, object]:
    rows = conn.execute(
        text("select id, matching_tags_snapshot from target_populations where target_band_id = :b"),
        {"b": band_id},
    )
    return dict(rows.all())


def reference_membership(conn: Connection, target_id: int) -> dict[int, int]:
    """me_file -> band per DOMAIN.md (the one reference: tests/reference.py)."""
    from tests.reference import membership

    return membership(conn, target_id)


def table_digests(engine: Engine) -> dict[str, tuple[int, str]]:
    """Row count and a digest of every row of every table qsnap knows: "nothing written"."""
    from qsnap_gui.store.tables import OPTIONAL_COLUMNS, REQUIRED_COLUMNS

    out = {}
    with engine.connect() as conn:
        present = set(
            conn.execute(
                text(
                    "select tablename from pg_tables "
                    "where schemaname = any(current_schemas(false)) and tablename = any(:t)"
                ),
                {"t": list(OPTIONAL_COLUMNS)},
            ).scalars()
        )
        for table in [*REQUIRED_COLUMNS, *sorted(present)]:
            out[table] = tuple(
                conn.execute(
                    text(
                        "select count(*), md5(coalesce(string_agg(t::text, '|' order by t.id), "
                        f"'')) from {table} t"
                    )
                ).one()
            )
    return out


def block_band_row(conn: Connection, band: int, nth: int) -> int:
    """Lock the band's nth row (by id) in an open transaction so a writer blocks on it.

    The id is read first: FOR UPDATE with OFFSET would also lock every skipped row.
    """
    row_id = conn.execute(
        text(
            "select id from target_populations where target_band_id = :b order by id "
            "offset :n limit 1"
        ),
        {"b": band, "n": nth},
    ).scalar_one()
    conn.execute(text("select 1 from target_populations where id = :i for update"), {"i": row_id})
    return row_id


def job_waiting_on_lock(engine: Engine, band: int) -> int | None:
    """The backend pid of the band's job (or of a group job) while it waits on a lock (the
    core names its sessions)."""
    with engine.connect() as conn:
        return conn.execute(
            text(
                "select pid from pg_stat_activity where application_name in (:a, :group) "
                "and wait_event_type = 'Lock'"
            ),
            {"a": f"qsnap band {band}", "group": GROUP_SESSION},
        ).scalar()
