"""The band snapshot engine's SQL: the snapshots of a band's rows built in one set-based
statement (DOMAIN.md "The snapshot of population"), and the statements that write them in keyset
batches, copying each new snapshot into the offers and ad events still NULL beside it.

Shared by the band job (snapshots.py), the single-row re-snapshot, the backfill scan and the demo.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

from sqlalchemy import Connection, Engine, text

from qsnap_gui.domain.codec import broken_sql, good_sql, same_sql
from qsnap_gui.domain.jobs import (
    Mode,
    Progress,
)
from qsnap_gui.store.queries import carrier_tables


def mode_predicate(
    mode: Mode, column: str = "tp.matching_tags_snapshot", me_file: str = "tp.me_file_id"
) -> str:
    """The rows a mode writes: NULL; NULL and broken; every row."""
    if mode is Mode.MISSING:
        return f"{column} is null"
    if mode is Mode.REPAIR:
        return f"({column} is null or {broken_sql(column, me_file)})"
    return "true"


def write_guard(mode: Mode, new: str) -> str:
    """The mode's rows, checked again as each batch writes; force mode also leaves alone a
    row whose stored snapshot equals the new one up to ties (its updated_at does not move)."""
    if mode is Mode.FORCE:
        return f"not ({same_sql('tp.matching_tags_snapshot', new)})"
    return mode_predicate(mode)


BAND_TRAITS_SQL = """
    select distinct t.id as trait_id, t.display_order as tdo,
           p.id as pid, p.trait_name as pname, p.display_order as pdo
    from target_band_trait_groups g
    join trait_groups tg on tg.id = g.trait_group_id
    join trait_group_traits gt on gt.trait_group_id = tg.id
    join traits t on t.id = gt.trait_id
    join traits p on p.id = t.parent_trait_id
    where g.target_band_id = :band
"""


def snapshot_select_sql(
    rows_sql: str,
    band_traits: str | None = None,
    *,
    lookup: bool = False,
    as_text: bool = False,
    batched: bool = False,
) -> str:
    """SELECT (id, snap) for the population rows that ``rows_sql`` yields as (id, me_file_id).

    Shared by the engine, the single-row re-snapshot and the backfill scan, so all follow
    DOMAIN.md identically. ``band_traits`` names a table already holding BAND_TRAITS_SQL's
    rows (the engine's analysed temp table, which gives the planner true row counts); the
    band's tags are then also fetched by an index condition on those trait ids, not by a
    merge over the trait_id index, which also reads the tags of every trait in between.
    ``lookup`` reads each row's tags through the me_file_id index instead of leaving the
    choice to the planner, which scans every tag of the database even for a band of a few
    thousand rows (28 s instead of 4 s for 58,000 rows among 39 M tags).
    The JSON is assembled as text and cast once: half the cost of nested jsonb_agg calls;
    ``as_text`` leaves that cast to whoever writes it. ``batched`` rows also carry a batch
    number ``b`` (yielded as (b, id, snap)): the rows are then sorted once, by batch and id,
    and every grouping after that sort streams.
    """
    traits = band_traits or f"({BAND_TRAITS_SQL})"
    key = "r.b, r.id" if batched else "r.id"
    tags = f"me_file_tags mt join {traits} bt on bt.trait_id = mt.trait_id"
    if band_traits and not lookup:
        tags += f" and mt.trait_id = any(array(select trait_id from {band_traits}))"
    on = "mt.me_file_id = r.me_file_id"
    looked_up = ""
    if lookup:
        # OFFSET 0 keeps each lookup a separate index scan; MATERIALIZED keeps the traits'
        # hash join out of the loop (else the hash is rebuilt for every row)
        tags = f"tags mt join {traits} bt on bt.trait_id = mt.trait_id"
        on = "mt.rid = r.id"
        looked_up = """
    tags as materialized (
        select r.id as rid, mt.id, mt.trait_id, mt.tag_value
        from rows r cross join lateral (
            select t.id, t.trait_id, t.tag_value from me_file_tags t
            where t.me_file_id = r.me_file_id offset 0) mt
    ),"""
    cast, as_jsonb = ("", "") if as_text else ("cast", " as jsonb")
    # a row without tags joins to NULLs: its one parent entry is NULL, which string_agg skips
    return f"""
    with rows as ({rows_sql}),{looked_up}
    kids as (
        select {key}, bt.pdo, bt.pid,
               '[' || bt.pid || ',' || coalesce(to_json(bt.pname)::text, 'null') || ','
               || coalesce(bt.pdo::text, 'null') || ',['
               || string_agg('[' || bt.trait_id || ','
                             || coalesce(to_json(mt.tag_value)::text, 'null') || ','
                             || coalesce(bt.tdo::text, 'null') || ']', ','
                             order by bt.tdo nulls last, bt.trait_id, mt.id)
               || ']]' as entry
        from rows r left join ({tags}) on {on}
        group by {key}, bt.pdo, bt.pid, bt.pname
    )
    select {key.replace("r.", "k.")},
           {cast}('{{"tags":[' || coalesce(string_agg(k.entry, ',' order by k.pdo nulls last, k.pid), '')
                || ']}}'{as_jsonb}) as snap
    from kids k
    group by {key.replace("r.", "k.")}
    """


STAGE_TABLE = "qsnap_band_snapshots"
TRAITS_TABLE = "qsnap_band_traits"
ROWS_TABLE = "qsnap_band_rows"

# The tables that carry a copy of the population's snapshot (DOMAIN.md "Offers and ad events")
CARRIERS = ("offers", "ad_events")

APPLY_SQL = f"""
    with b as (
        select id, snap from {STAGE_TABLE} where id > :last order by id limit :n
    ), u as (
        update target_populations tp
        set matching_tags_snapshot = b.snap,
            updated_at = date_trunc('second', clock_timestamp() at time zone 'UTC')
        from b
        where tp.id = b.id and tp.target_band_id = :band and {{guard}}
        returning tp.id, tp.me_file_id, tp.matching_tags_snapshot as snap
    ){{carry}}
    select (select max(id) from b), (select count(*) from u)
"""

# one row per population written, so the cursor's rowcount is the rows written
WRITE_SQL = """
    with v as (
        select * from unnest(cast(cast(:ids as text) as bigint[]),
                             cast(cast(:snaps as text) as text[])) as v(id, snap)
    ), u as (
        update target_populations tp
        set matching_tags_snapshot = cast(v.snap as jsonb),
            updated_at = date_trunc('second', clock_timestamp() at time zone 'UTC')
        from v
        where tp.id = v.id and tp.target_band_id = :band and {guard}
        returning tp.id, tp.me_file_id, tp.matching_tags_snapshot as snap
    ){carry}
    select 1 from u
"""


def fill_carrier_sql(table: str) -> str:
    """Fill the band's offers or ad events still NULL beside a good snapshot of a population
    that the job will not write (those are carried by the batches)."""
    return f"""
    update {table} c set matching_tags_snapshot = tp.matching_tags_snapshot
    from target_populations tp
    where tp.target_band_id = :band and c.target_band_id = :band
      and c.me_file_id = tp.me_file_id and c.matching_tags_snapshot is null
      and not exists (select 1 from {ROWS_TABLE} r where r.id = tp.id)
      and {good_sql("tp.matching_tags_snapshot", "tp.me_file_id")}
    """


_carriers: weakref.WeakKeyDictionary[Engine, tuple[str, ...]] = weakref.WeakKeyDictionary()


def carry_sql(tables: tuple[str, ...], unchanged_from: str | None = None) -> str:
    """CTEs copying the snapshots written by CTE ``u`` (me_file_id, snap) into the NULL
    snapshots of the same (me_file, band)'s offers and ad events; nothing else of those rows
    changes. The join is on (me_file_id, target_band_id), one batch's rows at a time.

    With ``unchanged_from`` (the batch's CTE of (id, ...)), a row of the batch that ``u`` left
    alone because its snapshot is already right (force mode) passes its stored one on.
    """
    if not tables:
        return ""
    source = "u"
    out = ""
    if unchanged_from is not None:
        source = "w"
        out = f""", w as (
        select u.me_file_id, u.snap from u
        union all
        select tp.me_file_id, tp.matching_tags_snapshot from {unchanged_from} x
        join target_populations tp on tp.id = x.id and tp.target_band_id = :band
        where not exists (select 1 from u where u.id = x.id)
          and {good_sql("tp.matching_tags_snapshot", "tp.me_file_id")}
    )"""
    # the batch's me_file ids as an index condition: a plain join of the CTE was planned as a
    # scan of the whole table per batch (10 ms of a 30 ms batch with 6,000 offers)
    for table in tables:
        out += f""", carry_{table} as (
        update {table} c set matching_tags_snapshot = s.snap
        from {source} s
        where c.me_file_id = any(array(select me_file_id from {source}))
          and c.me_file_id = s.me_file_id and c.target_band_id = :band
          and c.matching_tags_snapshot is null
        returning 1
    )"""
    return out


def carriers_of(engine: Engine) -> tuple[str, ...]:
    """The carrier tables found by the last ``prepare_band`` on this engine (detected then)."""
    tables = _carriers.get(engine)
    if tables is None:
        with engine.connect() as conn:
            tables = _carriers[engine] = carrier_tables(conn)
    return tables


def apply_sql(engine: Engine, mode: Mode) -> str:
    """The staged path's batch statement, with the carriers of this engine's database."""
    carry = carry_sql(carriers_of(engine), "b" if mode is Mode.FORCE else None)
    return APPLY_SQL.format(guard=write_guard(mode, "b.snap"), carry=carry)


def write_sql(engine: Engine, mode: Mode) -> str:
    """The relayed path's batch statement, with the carriers of this engine's database."""
    carry = carry_sql(carriers_of(engine), "v" if mode is Mode.FORCE else None)
    return WRITE_SQL.format(guard=write_guard(mode, "cast(v.snap as jsonb)"), carry=carry)


# a band smaller than this share of all me_files reads its tags me_file by me_file
LOOKUP_SHARE = 0.1
# a band with at least this many rows to write is written by WRITERS connections at once
SPLIT_ROWS = 5_000
WRITERS = 2
# computing a band's snapshots sorts and materialises them whole: with the default 4 MB (or
# the embedded server's 64 MB) a 58,000-row band spilled its 2.4 M tags to disk (4.9 s -> 3.4 s)
STAGING_WORK_MEM = "256MB"


def tune_band_compute(conn: Connection, lookup: bool) -> None:
    """Settings for computing one band's snapshots, in this transaction only.

    Its sorts fit in memory; and a band read by trait fetches its tags with a bitmap, in
    table order and each page once, instead of by index in trait order, one page per tag:
    the largest band of the 1,000,000-row bench (1 M tags) was computed in 4.4 s instead of
    9.0 s once other work had pushed the tag table out of shared buffers. A band read by
    lookup keeps its per-me_file index scans.
    """
    conn.execute(
        text(
            "select set_config('work_mem', :mem, true), set_config('enable_indexscan', :scan, true)"
        ),
        {"mem": STAGING_WORK_MEM, "scan": "on" if lookup else "off"},
    )


def prepare_band(conn: Connection, band_id: int, mode: Mode) -> tuple[int, bool]:
    """Temp tables of the band's traits and rows; returns (rows, read tags by lookup).

    Rows without a me_file are orphans and never written. The band's offers and ad events
    still NULL beside a good snapshot that this job will not write get that snapshot now, in
    the job's first transaction (the batches carry the snapshots they write themselves).
    """
    conn.execute(text(f"drop table if exists {STAGE_TABLE}, {TRAITS_TABLE}, {ROWS_TABLE}"))
    # the band's traits and rows are analysed on their own so the planner knows their true
    # sizes, also right after Refresh Population inserted rows the statistics do not know yet
    conn.execute(text(f"create temp table {TRAITS_TABLE} as {BAND_TRAITS_SQL}"), {"band": band_id})
    total = conn.execute(
        text(
            f"create temp table {ROWS_TABLE} as select tp.id, tp.me_file_id "
            "from target_populations tp where tp.target_band_id = :band "
            f"and tp.me_file_id is not null and {mode_predicate(mode)}"
        ),
        {"band": band_id},
    ).rowcount
    conn.execute(text(f"analyze {TRAITS_TABLE}, {ROWS_TABLE}"))
    tables = _carriers[conn.engine] = carrier_tables(conn)
    for table in tables:
        conn.execute(text(fill_carrier_sql(table)), {"band": band_id})
    me_files = conn.execute(
        text("select reltuples from pg_class where oid = to_regclass('me_files')")
    ).scalar()
    return total, total < LOOKUP_SHARE * (me_files or 0)


def band_select_sql(lookup: bool) -> str:
    return snapshot_select_sql(
        f"select id, me_file_id from {ROWS_TABLE}", TRAITS_TABLE, lookup=lookup
    )


def band_batches_sql(lookup: bool) -> str:
    """The band's snapshots as one row per batch of ``:n`` ids: two array literals (ids, JSON)."""
    rows = (
        f"select id, me_file_id, (row_number() over (order by id) - 1) / :n as b from {ROWS_TABLE}"
    )
    return (
        "select cast(array_agg(s.id order by s.id) as text), "
        "cast(array_agg(s.snap order by s.id) as text) "
        f"from ({snapshot_select_sql(rows, TRAITS_TABLE, lookup=lookup, as_text=True, batched=True)}) s "
        "group by s.b order by s.b"
    )


ProgressFn = Callable[[Progress], None]
LogFn = Callable[[str], None]
