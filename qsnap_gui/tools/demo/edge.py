"""The edge-case catalogue: the production cases of DOMAIN.md (NULLs, orphans, ties, odd
links, every broken shape) on a target of their own, its populations and its offers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Connection, insert, text

from qsnap_gui.store.tables import (
    MeFile,
    MeFileTag,
    Target,
    TargetBand,
    TargetBandTraitGroup,
    Trait,
    TraitGroup,
    TraitGroupTrait,
)
from qsnap_gui.tools.demo.catalogue import BASE_TIME, INPUT_TYPES
from qsnap_gui.tools.demo.populations import fill_band
from qsnap_gui.tools.demo.spec import DemoSpec, Parent, audit

# The edge-case me_files (ids after the generated ones): name, and the bucket (per mille, see
# SHAPED) their populations are shaped by. All have Loyalty "Gold", Colours "Red" and "Blue"
# and one of three zips, except "pets only", which lacks all but Loyalty.
EDGE_ME_FILES: tuple[tuple[str, int], ...] = (
    ("zip tag NULL", 0),
    ("zip tag empty", 0),
    ("colour tags NULL and empty, orphan tags", 0),
    ("snapshot with null values", 625),
    ("deleted", 0),
    ("loyalty only", 0),
    ("snapshot empty object", 636),
    ("never snapshotted", 700),
)


@dataclass
class Edge:
    target: int
    outer: int
    bullseye: int
    gone_band: int
    me_files: tuple[int, ...]
    ghost: int
    tags: int
    cases: dict[str, tuple[int, ...]]


def insert_edge_catalogue(conn: Connection, spec: DemoSpec, parents: list[Parent]) -> Edge:
    """The production cases of DOMAIN.md on traits, groups, targets, bands, me_files and tags.

    They live on traits of their own that no generated me_file has, so the edge target's
    membership is exactly the hand-made me_files below, whatever the rest of the data.
    Deleted rows are ids drawn from the sequence and never inserted.
    """
    at = BASE_TIME

    def new(model: type, **row: object) -> int:
        return conn.execute(insert(model).returning(model.id), row).scalar_one()

    def gone(table: str) -> int:
        return conn.execute(
            text("select nextval(pg_get_serial_sequence(:t, 'id'))"), {"t": table}
        ).scalar_one()

    def trait(name: str, order: int, parent: int | None, kind: str) -> int:
        return new(
            Trait,
            trait_name=name,
            display_order=order,
            parent_trait_id=parent,
            is_active=True,
            input_type=INPUT_TYPES[kind],
            **audit(at),
        )

    loyalty = trait("Loyalty Tier", 40, None, "single")
    gold = trait("Gold", 1, loyalty, "single")
    silver = trait("Silver", 2, loyalty, "single")
    colours = trait("Favourite Colours", 40, None, "multi")
    red = trait("Red", 1, colours, "multi")
    blue = trait("Blue", 1, colours, "multi")
    green = trait("Green", 2, colours, "multi")
    gone_trait = gone("traits")
    orphan = conn.execute(
        text("select min(id) from traits where trait_name = 'Orphaned answer'")
    ).scalar_one()
    zip_parent = next(p for p in parents if p.kind == "zip")
    zips = zip_parent.children[:3]
    zip_values = dict(zip(zip_parent.children, zip_parent.values, strict=True))

    def link_rows(model: type, rows: list[dict[str, object]]) -> tuple[int, ...]:
        stamped = [{**row, "created_at": at, "updated_at": at} for row in rows]
        return tuple(new(model, **row) for row in stamped)

    def group(title: str | None, parent: int, trait_ids: list[int]) -> int:
        gid = new(
            TraitGroup,
            title=title,
            parent_trait_id=parent,
            created_at=at,
            updated_at=at,
        )
        link_rows(TraitGroupTrait, [{"trait_group_id": gid, "trait_id": t} for t in trait_ids])
        return gid

    g_loyalty = group(None, loyalty, [gold, silver])
    g_colours = group("Favourite colours", colours, [red, blue, green, orphan, gone_trait])
    g_zip = group("Three zips", zip_parent.id, list(zips))
    g_gone = gone("trait_groups")

    def band(target_id: int | None, title: str | None, bullseye: bool, groups: list) -> int:
        bid = new(
            TargetBand,
            target_id=target_id,
            title=title,
            is_bullseye="1" if bullseye else "0",
            created_at=at,
            updated_at=at,
        )
        link_rows(
            TargetBandTraitGroup, [{"target_band_id": bid, "trait_group_id": g} for g in groups]
        )
        return bid

    def target(title: str | None, status: str | None) -> int:
        return new(Target, title=title, population_status=status, created_at=at, updated_at=at)

    edge_target = target(None, "not_populated")
    outer = band(edge_target, "Ring 1", False, [g_loyalty])
    tied = band(edge_target, None, False, [g_colours])
    bullseye = band(edge_target, "Bullseye", True, [g_loyalty, g_colours, g_zip, g_zip, g_gone])
    gone_band = gone("target_bands")
    unknown = target("Edge: unknown status", None)
    unknown_band = band(unknown, "Bullseye", True, [g_loyalty])
    loose_band = band(None, "Band of no target", True, [g_loyalty])
    null_trait_links = link_rows(
        TraitGroupTrait,
        [
            {"trait_group_id": g_loyalty, "trait_id": None},
            {"trait_group_id": None, "trait_id": gold},
        ],
    )
    null_group_links = link_rows(
        TargetBandTraitGroup,
        [
            {"target_band_id": unknown_band, "trait_group_id": None},
            {"target_band_id": None, "trait_group_id": g_loyalty},
        ],
    )

    first = spec.me_files + 1
    me_files = tuple(range(first, first + len(EDGE_ME_FILES)))
    ghost = first + len(EDGE_ME_FILES)
    m_null_zip, m_empty_zip, m_colours, _, m_deleted, m_loyalty = me_files[:6]
    conn.execute(
        insert(MeFile),
        [
            {
                "id": m,
                "display_name": None if m == m_loyalty else f"Edge case: {name}",
                "created_at": at,
                "updated_at": at,
            }
            for m, (name, _bucket) in zip(me_files, EDGE_ME_FILES, strict=True)
        ],
    )
    conn.execute(text("select setval(pg_get_serial_sequence('me_files', 'id'), :v)"), {"v": ghost})
    null_values: list[int] = []
    empty_values: list[int] = []
    tags = 0
    for n, m in enumerate((*me_files, ghost)):
        zip_id = zips[n % len(zips)]
        picks: list[tuple[int, str | None]] = [(gold, "Gold")]
        if m != m_loyalty:
            picks += [(red, "Red"), (blue, "Blue"), (zip_id, zip_values[zip_id])]
        if m == m_null_zip:
            picks[-1] = (zip_id, None)
        elif m == m_empty_zip:
            picks[-1] = (zip_id, "")
        elif m == m_colours:
            picks[1:3] = [(red, None), (blue, "")]
            picks += [(orphan, "Orphaned answer"), (gone_trait, "Deleted trait")]
        for trait_id, value in picks:
            tag_id = new(MeFileTag, me_file_id=m, trait_id=trait_id, tag_value=value, **audit(at))
            tags += 1
            if value is None:
                null_values.append(tag_id)
            elif value == "":
                empty_values.append(tag_id)
    cases = {
        "untitled_target": (edge_target,),
        "null_status_target": (unknown,),
        "tied_rings": (outer, tied),
        "untitled_band": (tied,),
        "deleted_group_link": (bullseye, g_gone),
        "duplicate_group_link": (bullseye, g_zip),
        "band_without_target": (loose_band,),
        "null_trait_group_links": null_trait_links,
        "null_band_group_links": null_group_links,
        "untitled_group": (g_loyalty,),
        "tied_parents": (loyalty, colours),
        "tied_children": (red, blue),
        "orphan_child_trait": (orphan,),
        "deleted_trait_in_group": (g_colours, gone_trait),
        "null_tag_values": tuple(null_values),
        "empty_tag_values": tuple(empty_values),
        "ghost_me_file": (ghost,),
        "nameless_me_file": (m_loyalty,),
        "deleted_me_file": (m_deleted,),
        "deleted_band": (gone_band,),
    }
    return Edge(edge_target, outer, bullseye, gone_band, me_files, ghost, tags, cases)


def populate_edge(conn: Connection, spec: DemoSpec, edge: Edge) -> None:
    """The edge target's populations as the application made them, and the orphan rows.

    Every edge me_file (and the ghost id, which has tags but no me_files row) is in the
    Bullseye, except "loyalty only": of the two tied rings the application treats the lower
    id as the outer one, and that me_file satisfies only it.
    """
    at = BASE_TIME + timedelta(days=edge.target)
    m_null_zip, m_empty_zip, m_colours, m_null_values, m_deleted, m_loyalty, m_empty, m_never = (
        edge.me_files
    )
    buckets = dict(zip(edge.me_files, (b for _name, b in EDGE_ME_FILES), strict=True))
    members = {
        edge.outer: [m_loyalty],
        edge.bullseye: [m for m in (*edge.me_files, edge.ghost) if m != m_loyalty],
    }
    buckets[edge.ghost] = 700
    for band_id, me_files in members.items():
        conn.execute(
            text(
                "create temp table demo_band_rows (id int, me_file_id int, bucket int) "
                "on commit drop"
            )
        )
        conn.execute(
            text("insert into demo_band_rows values (:m, :m, :b)"),
            [{"m": m, "b": buckets[m]} for m in me_files],
        )
        fill_band(conn, spec, band_id, len(me_files), at)
    conn.execute(
        text(
            "update target_populations set matching_tags_snapshot = 'null'::jsonb "
            "where target_band_id = :b and me_file_id = :m"
        ),
        {"b": edge.outer, "m": m_loyalty},
    )
    conn.execute(
        text(
            "insert into target_populations (target_band_id, me_file_id, created_at, "
            "updated_at) values (:b, :m, :at, :at)"
        ),
        [
            {"b": None, "m": m_null_zip, "at": at},
            {"b": edge.bullseye, "m": None, "at": at},
            {"b": edge.gone_band, "m": m_null_zip, "at": at},
            {"b": edge.gone_band, "m": m_empty_zip, "at": at},
        ],
    )
    conn.execute(text("delete from me_files where id = :m"), {"m": m_deleted})
    rows = conn.execute(
        text(
            "select id, target_band_id, me_file_id from target_populations "
            "where target_band_id = any(:bands) or target_band_id is null or me_file_id is null "
            "order by id"
        ),
        {"bands": [edge.outer, edge.bullseye, edge.gone_band]},
    ).all()

    def pops(band: int | None, *me_files: int | None) -> tuple[int, ...]:
        return tuple(r.id for r in rows if r.target_band_id == band and r.me_file_id in me_files)

    edge.cases.update(
        {
            "true_null_values_snapshot": pops(edge.bullseye, m_null_zip, m_empty_zip, m_colours),
            "null_values_snapshot": pops(edge.bullseye, m_null_values),
            "deleted_me_file_populations": pops(edge.bullseye, m_deleted),
            "json_null_snapshot": pops(edge.outer, m_loyalty),
            "empty_object_snapshot": pops(edge.bullseye, m_empty),
            "null_snapshot": pops(edge.bullseye, m_never),
            "ghost_populations": pops(edge.bullseye, edge.ghost),
            "population_null_band": pops(None, m_null_zip),
            "population_null_me_file": pops(edge.bullseye, None),
            "deleted_band_populations": pops(edge.gone_band, m_null_zip, m_empty_zip),
        }
    )


def insert_edge_offers(conn: Connection, edge: Edge) -> None:
    """Offers and ad events of the edge Bullseye: NULL as their population, NULL while it is
    filled ("left NULL"), and copied; plus ad events without offer, target or band."""
    at = BASE_TIME + timedelta(days=edge.target, hours=2)
    m_null_zip, m_empty_zip, m_colours = edge.me_files[:3]
    m_never = edge.me_files[7]
    offer_ids = []
    for m, copy in ((m_never, True), (m_null_zip, False), (m_empty_zip, True)):
        offer_ids.append(
            conn.execute(
                text(
                    """
                    insert into offers (campaign_id, me_file_id, media_run_id, media_piece_id,
                                        ad_phase_count_to_complete, target_band_id, offer_amt,
                                        marketer_cost_amt, created_at, updated_at,
                                        matching_tags_snapshot)
                    select :t, :m, :t * 10 + 2, :t * 10 + 2, 3, :b, 0.50, 0.75, :at, :at,
                           case when :copy then p.matching_tags_snapshot end
                    from target_populations p where p.target_band_id = :b and p.me_file_id = :m
                    returning id
                    """
                ),
                {"t": edge.target, "m": m, "b": edge.bullseye, "at": at, "copy": copy},
            ).scalar_one()
        )
    event_ids = []
    for offer_id in offer_ids:
        event_ids.append(
            conn.execute(
                text(
                    """
                    insert into ad_events (campaign_id, me_file_id, target_id, target_band_id,
                                           offer_id, created_at, updated_at,
                                           matching_tags_snapshot)
                    select campaign_id, me_file_id, campaign_id, target_band_id, id, :at, :at,
                           matching_tags_snapshot
                    from offers where id = :o
                    returning id
                    """
                ),
                {"o": offer_id, "at": at},
            ).scalar_one()
        )
    for target_id, band_id in ((edge.target, edge.bullseye), (None, None)):
        event_ids.append(
            conn.execute(
                text(
                    "insert into ad_events (me_file_id, target_id, target_band_id, created_at, "
                    "updated_at) values (:m, :t, :b, :at, :at) returning id"
                ),
                {"m": m_colours, "t": target_id, "b": band_id, "at": at},
            ).scalar_one()
        )
    edge.cases.update(
        {
            "offer_null_with_population_null": (offer_ids[0],),
            "offer_left_null": (offer_ids[1],),
            "offer_copied": (offer_ids[2],),
            "ad_event_null_with_population_null": (event_ids[0],),
            "ad_event_left_null": (event_ids[1],),
            "ad_event_copied": (event_ids[2],),
            "ad_event_without_offer": (event_ids[3],),
            "ad_event_without_band": (event_ids[4],),
        }
    )
