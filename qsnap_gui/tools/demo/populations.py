"""Populations by the DOMAIN.md rules, written once with their snapshot, and the share of
each band given every broken shape (SHAPED).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, text

from qsnap_gui.engine.population import compute_membership, outermost_first
from qsnap_gui.engine.snapshot_sql import (
    BAND_TRAITS_SQL,
    LOOKUP_SHARE,
    snapshot_select_sql,
    tune_band_compute,
)
from qsnap_gui.tools.demo.catalogue import BASE_TIME
from qsnap_gui.tools.demo.spec import DemoSpec, h


def populate(conn: Connection, spec: DemoSpec, target_id: int) -> None:
    """The target's populations by the DOMAIN.md rules, inserted with their snapshots.

    Per mille of each band: good envelopes for most rows, a few of every broken shape, the
    rest NULL. Each row is written once, snapshot included (a NULL insert and an update
    per row cost twice as much).
    """
    band_ids = outermost_first(conn, target_id)
    compute_membership(conn, band_ids)
    conn.execute(text("create index on qsnap_membership (band_id)"))
    bucket = f"({h(spec.seed, 9, 'm.me_file_id * 64 + m.band_id')} % 1000)"
    at = BASE_TIME + timedelta(days=target_id)
    for band_id in band_ids:
        rows = conn.execute(
            text(
                "create temp table demo_band_rows on commit drop as "
                "select m.me_file_id as id, m.me_file_id, "
                f"{bucket} as bucket from qsnap_membership m where m.band_id = :band"
            ),
            {"band": band_id},
        ).rowcount
        fill_band(conn, spec, band_id, rows, at)
    conn.execute(
        text("drop table if exists qsnap_membership, qsnap_member_traits, qsnap_member_masks")
    )


def fill_band(conn: Connection, spec: DemoSpec, band_id: int, rows: int, at: datetime) -> None:
    """Insert the band's populations listed in demo_band_rows (id = me_file id, bucket)."""
    # the band's traits and rows analysed on their own, and small bands read by lookup,
    # as the engine does (the planner otherwise scans every tag for each band)
    conn.execute(
        text(f"create temp table demo_band_traits on commit drop as {BAND_TRAITS_SQL}"),
        {"band": band_id},
    )
    conn.execute(text("analyze demo_band_traits, demo_band_rows"))
    lookup = rows < LOOKUP_SHARE * spec.me_files
    tune_band_compute(conn, lookup)
    select = snapshot_select_sql(
        "select id, me_file_id from demo_band_rows where bucket < 640",
        "demo_band_traits",
        lookup=lookup,
    )
    conn.execute(
        text(
            "insert into target_populations (target_band_id, me_file_id, "
            "matching_tags_snapshot, created_at, updated_at) "
            f"select :band, r.id, {SHAPED}, :at, :at "
            f"from demo_band_rows r left join ({select}) s on s.id = r.id"
        ),
        {"band": band_id, "at": at},
    )
    # the next target's membership reads through the trait_id index again
    conn.execute(text("reset enable_indexscan"))
    conn.execute(text("drop table demo_band_traits, demo_band_rows"))


# the snapshot a demo row gets from its bucket (r.bucket, per mille) and good envelope (s.snap)
SHAPED = """case
    when r.bucket >= 640 then null
    when r.bucket < 600 then s.snap
    when r.bucket < 620 then s.snap -> 'tags'
    when r.bucket < 630 then jsonb_build_object('tags', (
        select jsonb_agg(case when e.ord = 1 then jsonb_build_array(e.p -> 0, e.p -> 1, e.p -> 2,
                    (select jsonb_agg(jsonb_build_array(c -> 0, null, c -> 2))
                     from jsonb_array_elements(e.p -> 3) c)) else e.p end order by e.ord)
        from jsonb_array_elements(s.snap -> 'tags') with ordinality as e(p, ord)))
    when r.bucket < 635 then jsonb_build_object('snapshot_at', '2024-06-01T12:00:00Z',
        'tags', coalesce((
            select jsonb_agg(jsonb_build_object('trait_id', c -> 0, 'trait_name', c -> 1,
                                                'parent_trait_id', p -> 0))
            from jsonb_array_elements(s.snap -> 'tags') p, jsonb_array_elements(p -> 3) c),
            '[]'::jsonb))
    when r.bucket < 639 then '{}'::jsonb
    else (array['"snapshot pending"', '{"tags": "none"}', '[[1, "x"]]',
                '{"tags": [[4, "Home Zip Code", 1, [[36566, 2140]]]]}'])[1 + r.id % 4]::jsonb
end"""
