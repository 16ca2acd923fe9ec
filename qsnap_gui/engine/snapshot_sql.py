"""The band snapshot engine's SQL: the snapshots of a band's rows built in one set-based
statement (DOMAIN.md "The snapshot of population"), and the statements that write them in keyset
batches, copying each new snapshot into the offers and ad events still NULL beside it.

Shared by the band job (snapshots.py), the group job (group.py: the same statements in their
``grouped`` form, each row carrying its band), the single-row re-snapshot, the backfill scan and
the demo.
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


def band_traits_sql(grouped: bool = False) -> str:
    """The traits of band ``:band`` as (trait_id, tdo, pid, pname, pdo); ``grouped``, those of
    every band in ``:bands``, each row with its ``band_id`` first."""
    band, where = ("g.target_band_id as band_id, ", "= any(cast(:bands as int[]))")
    if not grouped:
        band, where = "", "= :band"
    return f"""
    select distinct {band}t.id as trait_id, t.display_order as tdo,
           p.id as pid, p.trait_name as pname, p.display_order as pdo
    from target_band_trait_groups g
    join trait_groups tg on tg.id = g.trait_group_id
    join trait_group_traits gt on gt.trait_group_id = tg.id
    join traits t on t.id = gt.trait_id
    join traits p on p.id = t.parent_trait_id
    where g.target_band_id {where}
"""


BAND_TRAITS_SQL = band_traits_sql()


def snapshot_select_sql(
    rows_sql: str,
    band_traits: str | None = None,
    *,
    lookup: bool = False,
    as_text: bool = False,
    batched: bool = False,
    grouped: bool = False,
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

    ``grouped`` rows are of several bands: ``rows_sql`` yields (id, me_file_id, band_id) and
    ``band_traits`` holds ``band_traits_sql(grouped=True)``'s rows; each row is built from
    its own band's traits and yielded with its band, as (id, band_id, snap).
    """
    traits = band_traits or f"({band_traits_sql(grouped)})"
    key = "r.b, r.id" if batched else "r.id"
    if grouped:
        key += ", r.band_id"
    tags = f"me_file_tags mt join {traits} bt on bt.trait_id = mt.trait_id"
    if band_traits and not lookup:
        tags += f" and mt.trait_id = any(array(select trait_id from {band_traits}))"
    on = "mt.me_file_id = r.me_file_id"
    if grouped:
        # each row's tags of its own band's traits, found by an inner join that the planner
        # may order freely: the traits of nested bands repeat, and joining the tags to every
        # band's traits first made 2.5 times as many rows as it kept
        tags = (
            f"rows rt join me_file_tags mt on mt.me_file_id = rt.me_file_id "
            f"join {traits} bt on bt.trait_id = mt.trait_id and bt.band_id = rt.band_id"
        )
        if band_traits and not lookup:
            tags += f" and mt.trait_id = any(array(select trait_id from {band_traits}))"
        on = "rt.id = r.id"
    looked_up = ""
    if lookup:
        # OFFSET 0 keeps each lookup a separate index scan; MATERIALIZED keeps the traits'
        # hash join out of the loop (else the hash is rebuilt for every row). A band of a few
        # traits looks up only its traits' tags, by the (me_file_id, trait_id) index: a
        # me_file's other tags were fetched and then dropped by the join (95 % of them for
        # 250 bands of the many-targets bench: 150 ms -> 105 ms)
        tags = f"tags mt join {traits} bt on bt.trait_id = mt.trait_id"
        on = "mt.rid = r.id"
        lists = (
            f"select array_agg(lt.trait_id) as ids from {traits} lt "
            f"having count(*) <= {LOOKUP_TRAITS}"
        )
        band, lists, join = "", f"select (select ids from ({lists}) x) as ids", "cross join lists l"
        if grouped:
            tags += " and bt.band_id = mt.rband"
            band = "r.band_id as rband, "
            lists = (
                f"select lt.band_id, array_agg(lt.trait_id) as ids from {traits} lt "
                f"group by lt.band_id having count(*) <= {LOOKUP_TRAITS}"
            )
            join = "left join lists l on l.band_id = r.band_id"
        looked_up = f"""
    lists as materialized ({lists}),
    tags as materialized (
        select r.id as rid, {band}mt.id, mt.trait_id, mt.tag_value
        from rows r {join} cross join lateral (
            select t.id, t.trait_id, t.tag_value from me_file_tags t
            where l.ids is not null and t.me_file_id = r.me_file_id and t.trait_id = any(l.ids)
            union all
            select t.id, t.trait_id, t.tag_value from me_file_tags t
            where l.ids is null and t.me_file_id = r.me_file_id
            offset 0) mt
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
# a group job's tables: the band job's with each row's band (and its rows' batch numbers)
GROUP_STAGE_TABLE = "qsnap_group_snapshots"
GROUP_TRAITS_TABLE = "qsnap_group_traits"
GROUP_ROWS_TABLE = "qsnap_group_rows"

# The tables that carry a copy of the population's snapshot (DOMAIN.md "Offers and ad events")
CARRIERS = ("offers", "ad_events")

NOW_SQL = "date_trunc('second', clock_timestamp() at time zone 'UTC')"


def _update_sql(source: str, new: str, guard: str, grouped: bool) -> str:
    """CTE ``u``: write the snapshots of CTE ``source`` (id, snap; ``grouped``: and band) into
    the rows of their band that ``guard`` still selects, returning what it wrote.

    The rows are found by their ids (``= any`` of the batch's ids, an index condition):
    right after a refresh the statistics still say NULL snapshots are few, and the planner
    read every NULL row through the partial index and hashed them, once per batch (3 s a
    batch at a million new rows).
    """
    band = f"{source}.band" if grouped else ":band"
    return f"""u as (
        update target_populations tp
        set matching_tags_snapshot = {new},
            updated_at = {NOW_SQL}
        from {source}
        where tp.id = any(array(select id from {source}))
          and tp.id = {source}.id and tp.target_band_id = {band} and {guard}
        returning tp.id, tp.me_file_id, tp.target_band_id as band,
                  tp.matching_tags_snapshot as snap
    )"""


# the staged path's batches: keyset slices of a band's ids, or a group's numbered batches
# without the rows of the bands in :skip (cancelled meanwhile)
_STAGED_BATCH = {
    False: f"select id, snap from {STAGE_TABLE} where id > :last order by id limit :n",
    True: f"select id, band_id as band, snap from {GROUP_STAGE_TABLE} "
    "where b = :b and band_id <> all(cast(:skip as int[]))",
}
_UNNEST = {
    False: "select * from unnest(cast(cast(:ids as text) as bigint[]), "
    "cast(cast(:snaps as text) as text[])) as v(id, snap)",
    True: "select * from unnest(cast(cast(:ids as text) as bigint[]), "
    "string_to_array(cast(:snaps as text), chr(10)), cast(cast(:bands as text) as int[])) "
    "as v(id, snap, band) where band <> all(cast(:skip as int[]))",
}
# a band's batch says how far it got and how many rows it wrote (one row per population
# written when relayed, so the cursor's rowcount is the rows written); a group's batch, how
# many rows it wrote in each band
_WRITTEN = "select band, count(*) from u group by band"
_APPLY_RESULT = {False: "select (select max(id) from b), (select count(*) from u)", True: _WRITTEN}
_WRITE_RESULT = {False: "select 1 from u", True: _WRITTEN}


def fill_carrier_sql(table: str, grouped: bool = False) -> str:
    """Fill the band's offers or ad events still NULL beside a good snapshot of a population
    that the job will not write (those are carried by the batches); ``grouped``, those of
    every band in ``:bands``."""
    rows, bands = (GROUP_ROWS_TABLE, "= any(cast(:bands as int[]))")
    if not grouped:
        rows, bands = ROWS_TABLE, "= :band"
    return f"""
    update {table} c set matching_tags_snapshot = tp.matching_tags_snapshot
    from target_populations tp
    where tp.target_band_id {bands} and c.target_band_id = tp.target_band_id
      and c.me_file_id = tp.me_file_id and c.matching_tags_snapshot is null
      and not exists (select 1 from {rows} r where r.id = tp.id)
      and {good_sql("tp.matching_tags_snapshot", "tp.me_file_id")}
    """


_carriers: weakref.WeakKeyDictionary[Engine, tuple[str, ...]] = weakref.WeakKeyDictionary()


def carry_sql(
    tables: tuple[str, ...], unchanged_from: str | None = None, grouped: bool = False
) -> str:
    """CTEs copying the snapshots written by CTE ``u`` (me_file_id, snap) into the NULL
    snapshots of the same (me_file, band)'s offers and ad events; nothing else of those rows
    changes. The join is on (me_file_id, target_band_id), one batch's rows at a time.

    With ``unchanged_from`` (the batch's CTE of (id, ...)), a row of the batch that ``u`` left
    alone because its snapshot is already right (force mode) passes its stored one on.
    ``grouped`` batches hold rows of several bands: ``u`` and ``unchanged_from`` also yield
    each row's ``band``, and each copy goes to its own row's band.
    """
    if not tables:
        return ""
    source = "u"
    band = "s.band" if grouped else ":band"
    out = ""
    if unchanged_from is not None:
        source = "w"
        kept, kept_band = (", u.band", ", tp.target_band_id") if grouped else ("", "")
        row_band = f"{unchanged_from}.band" if grouped else ":band"
        out = f""", w as (
        select u.me_file_id, u.snap{kept} from u
        union all
        select tp.me_file_id, tp.matching_tags_snapshot{kept_band} from {unchanged_from}
        join target_populations tp
          on tp.id = {unchanged_from}.id and tp.target_band_id = {row_band}
        where tp.id = any(array(select id from {unchanged_from}))
          and not exists (select 1 from u where u.id = {unchanged_from}.id)
          and {good_sql("tp.matching_tags_snapshot", "tp.me_file_id")}
    )"""
    # the batch's me_file ids as an index condition: a plain join of the CTE was planned as a
    # scan of the whole table per batch (10 ms of a 30 ms batch with 6,000 offers)
    for table in tables:
        out += f""", carry_{table} as (
        update {table} c set matching_tags_snapshot = s.snap
        from {source} s
        where c.me_file_id = any(array(select me_file_id from {source}))
          and c.me_file_id = s.me_file_id and c.target_band_id = {band}
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


def apply_sql(engine: Engine, mode: Mode, grouped: bool = False) -> str:
    """The staged path's batch statement, with the carriers of this engine's database."""
    carry = carry_sql(carriers_of(engine), "b" if mode is Mode.FORCE else None, grouped)
    update = _update_sql("b", "b.snap", write_guard(mode, "b.snap"), grouped)
    return f"""
    with b as ({_STAGED_BATCH[grouped]}), {update}{carry}
    {_APPLY_RESULT[grouped]}
    """


def write_sql(engine: Engine, mode: Mode, grouped: bool = False) -> str:
    """The relayed path's batch statement, with the carriers of this engine's database."""
    new = "cast(v.snap as jsonb)"
    carry = carry_sql(carriers_of(engine), "v" if mode is Mode.FORCE else None, grouped)
    update = _update_sql("v", new, write_guard(mode, new), grouped)
    return f"""
    with v as ({_UNNEST[grouped]}), {update}{carry}
    {_WRITE_RESULT[grouped]}
    """


# a band smaller than this share of all me_files reads its tags me_file by me_file
LOOKUP_SHARE = 0.1
# a band read me_file by me_file with at most this many traits reads only its traits' tags
# (an index descent per trait); one with more, every tag of the me_file. Timed on 20,000 rows
# of the 1,000,000-row bench (40 tags per me_file): 8 traits 0.27 s, 16 0.41 s, 32 0.70 s,
# 64 1.32 s, against 0.60 s for every tag
LOOKUP_TRAITS = 24
# a group of more bands than this reads its tags me_file by me_file whatever its size: their
# traits overlap, and a read by trait met each tag once per band sharing its trait (250 small
# bands of 10 rows each took 27 s instead of well under one)
SCAN_BANDS = 8
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
    9.0 s once other work had pushed the tag table out of shared buffers. Read by trait, no
    nested loop either: with the bands' traits as an index condition beside each row's
    me_file, the planner probed the (me_file_id, trait_id) index once per row with every trait
    id of the bands (a descent per id), and the build of 1,000,000 rows at 60 tags (9,073
    traits) had not returned its first row after 10 minutes, where the hashed read takes
    seconds. A band read by lookup keeps its per-me_file index scans.
    """
    by_lookup = "on" if lookup else "off"
    conn.execute(
        text(
            "select set_config('work_mem', :mem, true), set_config('enable_indexscan', :on, true), "
            "set_config('enable_nestloop', :on, true)"
        ),
        {"mem": STAGING_WORK_MEM, "on": by_lookup},
    )


def tune_group_compute(conn: Connection, lookup: bool) -> None:
    """``tune_band_compute``, and for a group read by trait no merge joins, in this
    transaction only: the planner, expecting a seventh of the tags it meets, sorted them all
    by me_file to merge them with the rows, where hashing the rows needs no sort (an eighth
    of the build's server time at 100,000 rows)."""
    tune_band_compute(conn, lookup)
    if not lookup:
        conn.execute(text("select set_config('enable_mergejoin', 'off', true)"))


def _fill_carriers(conn: Connection, params: dict, grouped: bool) -> None:
    tables = _carriers[conn.engine] = carrier_tables(conn)
    for table in tables:
        conn.execute(text(fill_carrier_sql(table, grouped)), params)


def reads_by_lookup(conn: Connection, total: int) -> bool:
    """Whether so few rows read their tags me_file by me_file (LOOKUP_SHARE)."""
    me_files = conn.execute(
        text("select reltuples from pg_class where oid = to_regclass('me_files')")
    ).scalar()
    return total < LOOKUP_SHARE * (me_files or 0)


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
    _fill_carriers(conn, {"band": band_id}, grouped=False)
    return total, reads_by_lookup(conn, total)


def prepare_group(
    conn: Connection, band_ids: list[int], mode: Mode, batch_size: int
) -> tuple[dict[int, dict[int, int]], bool]:
    """The group's temp tables: every band's traits, and the rows the mode selects in all of
    them numbered into batches of ``batch_size`` in id order, across bands.

    Returns (batch -> band -> rows, read tags by lookup). As ``prepare_band``, for every band
    of the group: orphans are left out, and carriers still NULL beside a good snapshot that
    no batch will write are filled now.
    """
    conn.execute(
        text(f"drop table if exists {GROUP_STAGE_TABLE}, {GROUP_TRAITS_TABLE}, {GROUP_ROWS_TABLE}")
    )
    params = {"bands": band_ids}
    conn.execute(
        text(f"create temp table {GROUP_TRAITS_TABLE} as {group_traits_sql()}"),
        params,
    )
    total = conn.execute(
        text(
            f"create temp table {GROUP_ROWS_TABLE} as select tp.id, tp.me_file_id, "
            "tp.target_band_id as band_id, (row_number() over (order by tp.id) - 1) / :n as b "
            "from target_populations tp where tp.target_band_id = any(cast(:bands as int[])) "
            f"and tp.me_file_id is not null and {mode_predicate(mode)}"
        ),
        {**params, "n": batch_size},
    ).rowcount
    conn.execute(text(f"analyze {GROUP_TRAITS_TABLE} (band_id, trait_id), {GROUP_ROWS_TABLE}"))
    _fill_carriers(conn, params, grouped=True)
    batches: dict[int, dict[int, int]] = {}
    for batch, band, rows in conn.execute(
        text(f"select b, band_id, count(*) from {GROUP_ROWS_TABLE} group by b, band_id")
    ):
        batches.setdefault(int(batch), {})[band] = rows
    return batches, reads_by_lookup(conn, total) or len(band_ids) > SCAN_BANDS


def band_select_sql(lookup: bool) -> str:
    return snapshot_select_sql(
        f"select id, me_file_id from {ROWS_TABLE}", TRAITS_TABLE, lookup=lookup
    )


def group_traits_sql() -> str:
    """``band_traits_sql(grouped=True)``'s rows with what the group's build needs of them
    made once per trait instead of once per tag: the ranks of each parent and child in
    snapshot order (``pord``, ``tord``: ints, so the build sorts on ints alone) and the text
    around each entry (``phead``: a parent entry up to its children; ``chead``, ``ctail``: a
    child entry before and after its tag value)."""
    return f"""
    select s.*,
           dense_rank() over (order by s.pdo nulls last, s.pid) as pord,
           dense_rank() over (order by s.tdo nulls last, s.trait_id) as tord,
           '[' || s.pid || ',' || coalesce(to_json(s.pname)::text, 'null') || ','
           || coalesce(s.pdo::text, 'null') || ',[' as phead,
           '[' || s.trait_id || ',' as chead,
           ',' || coalesce(s.tdo::text, 'null') || ']' as ctail
    from ({band_traits_sql(grouped=True)}) s
"""


def _group_build_sql(
    lookup: bool,
    as_text: bool,
    rows: str = f"select id, me_file_id, band_id, b from {GROUP_ROWS_TABLE}",
    traits: str = GROUP_TRAITS_TABLE,
) -> str:
    """The snapshots of the group's rows as (b, id, band_id, snap), sorted by batch and id;
    ``rows`` and ``traits`` name others of the same columns (the deep check's).

    Read by trait, each kept tag is sorted once on ints and its entry is glued from
    ``group_traits_sql``'s pieces: the same text as ``snapshot_select_sql`` builds (a 9-key
    sort with the parent's name and a dozen function calls per tag) for three quarters of
    its server time (2.85 instead of 3.75 CPU-seconds for 100,000 rows of 60 tags, with
    ``tune_group_compute``). Read by lookup, ``snapshot_select_sql``'s statement is kept.
    """
    if lookup:
        return snapshot_select_sql(
            rows, traits, lookup=True, as_text=as_text, batched=True, grouped=True
        )
    cast, as_jsonb = ("", "") if as_text else ("cast", " as jsonb")
    # a row without tags joins to NULLs: its one parent entry is NULL, which string_agg skips
    return f"""
    with rows as ({rows}),
    kids as (
        select r.b, r.id, r.band_id, bt.pord, min(bt.phead collate "C") as phead,
               string_agg(bt.chead || coalesce(to_json(mt.tag_value)::text, 'null') || bt.ctail,
                          ',' order by bt.tord, mt.id) as kids
        from rows r left join (
            rows rt join me_file_tags mt on mt.me_file_id = rt.me_file_id
            join {traits} bt on bt.trait_id = mt.trait_id and bt.band_id = rt.band_id
                and mt.trait_id = any(array(select trait_id from {traits}))
        ) on rt.id = r.id
        group by r.b, r.id, r.band_id, bt.pord
    )
    select k.b, k.id, k.band_id,
           {cast}('{{"tags":[' || coalesce(string_agg(k.phead || k.kids || ']]', ',' order by k.pord), '')
                || ']}}'{as_jsonb}) as snap
    from kids k
    group by k.b, k.id, k.band_id
    """


def stale_by_trait_sql(column: str = "tp.matching_tags_snapshot") -> str:
    """The rows of the bands in ``:bands`` whose good snapshot differs, up to ties, from the
    one the engine would build now, as (band_id, id, me_file_id): the deep check of bands
    large enough for the engine to read their tags by trait, built as the group build does
    (run it under ``tune_group_compute(lookup=False)``).

    All the bands' tags are read once, in table order, and the shape check runs only on rows
    whose text differs from the rebuild (a row of equal text is good and the same): a
    target's three equal bands of the 100,000-row bench at 60 tags were checked in 2.8 s
    instead of 1.9 s each, band by band.
    """
    rows = (
        "select tp.id, tp.me_file_id, tp.target_band_id as band_id, 0 as b "
        "from target_populations tp where tp.target_band_id = any(cast(:bands as int[])) "
        f"and tp.me_file_id is not null and {column} is not null"
    )
    build = _group_build_sql(False, as_text=False, rows=rows, traits="qsnap_stale_traits")
    return f"""
    with qsnap_stale_traits as materialized ({group_traits_sql()})
    select s.band_id, s.id, tp.me_file_id
    from ({build}) s
    join target_populations tp on tp.id = s.id and tp.target_band_id = s.band_id
    where case when cast({column} as text) = cast(s.snap as text) then false
               else {good_sql(column, "tp.me_file_id")} and not ({same_sql(column, "s.snap")}) end
    """


def stage_group(conn: Connection, lookup: bool) -> None:
    """The staged path's table of the group's snapshots, indexed by batch and analysed: each
    batch's update then hashes its rows, where a batch estimated at a handful of rows was
    matched by a nested loop over every pair (79 ms a batch of 500 instead of 17)."""
    conn.execute(
        text(f"create temp table {GROUP_STAGE_TABLE} as {_group_build_sql(lookup, as_text=False)}")
    )
    conn.execute(text(f"create index on {GROUP_STAGE_TABLE} (b)"))
    conn.execute(text(f"analyze {GROUP_STAGE_TABLE} (b)"))


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


def group_batches_sql(lookup: bool) -> str:
    """The group's snapshots as one row per numbered batch: its number, an array literal of
    its ids, its JSON texts one per line, and an array literal of its bands.

    A snapshot's JSON never holds a line feed (to_json escapes it in every string), so the
    lines need no quoting: an array literal of them escaped every quote on the way out and
    unescaped it again in the writers (about 0.5 of their 5.4 CPU-seconds for 100,000 rows).
    """
    return (
        "select s.b, cast(array_agg(s.id order by s.id) as text), "
        "string_agg(s.snap, chr(10) order by s.id), "
        "cast(array_agg(s.band_id order by s.id) as text) "
        f"from ({_group_build_sql(lookup, as_text=True)}) s group by s.b order by s.b"
    )


ProgressFn = Callable[[Progress], None]
LogFn = Callable[[str], None]
