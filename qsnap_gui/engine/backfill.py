"""Bulk backfill: find every population whose snapshot is missing, broken or stale,
and fix them band by band with the snapshot engine. No Qt here: the wizard and ``qsnap
backfill`` share this module.

Categories and the engine modes they use
----------------------------------------
* **missing**: ``matching_tags_snapshot IS NULL``. Fixed in ``Mode.MISSING``, whose write guard
  touches NULL rows only.
* **broken**: ``codec.broken_sql`` (bare array, legacy flat, empty object, JSON null, invalid,
  and blank values where the me_file's tag on that trait has a value now). Fixed in
  ``Mode.REPAIR``, whose guard also fills NULL rows, so *broken implies missing*:
  ``effective_categories`` adds it, and the wizard shows it checked.
* **stale**: a snapshot that is neither NULL nor broken and differs, up to the order of tied
  entries (``codec.same_sql``), from what ``snapshot_sql.snapshot_select_sql`` builds from the
  current tags. Fixed in ``Mode.FORCE``, which considers every row of the band but writes only
  those whose snapshot would change: *stale implies missing and broken*, and rows already
  current keep their value and ``updated_at``.
* **offers/ad events left NULL** (always counted where the tables exist and may be read):
  offers and ad events whose snapshot is NULL while their population's is filled and not
  broken. Every band job fills them (``snapshot_sql.prepare_band`` and each batch), so a band with
  nothing else to fix runs in ``Mode.MISSING`` for them.

Rows outside the chosen scope keep their snapshot and ``updated_at``: with only missing chosen,
broken and stale rows stay untouched; with missing and broken, stale rows stay untouched.
Rows whose me_file is NULL are orphans: never counted here and never written. After a run,
a new scan of the same categories finds nothing to fix (DOMAIN.md "Fixed point").

The rate estimate
-----------------
``measure_rate`` times ``snapshot_select_sql`` (the builder the engine runs) on a sample of up
to ``SAMPLE_ROWS`` rows of the largest bands to fix, inside the database and without writing,
each row's tags looked up by its me_file (left to the planner, a sample of a large band read
every tag of the band's traits: 2.1-3.1 s instead of 0.5 s for 5,000 rows of the 100,000-row
bench at 60 tags), and divides by ``WRITE_COST_FACTOR``: on the demo databases (3,000 and 100,000 me_files) a
whole band job (build into a temporary table, then keyset UPDATE batches that also maintain
the GIN index, then the recount) took about 1.5 times as long per row as building a sample of
the same band's rows. ``estimate_seconds`` adds ``BAND_OVERHEAD_SECONDS`` per band job
(connection, lock, staging table) and divides by the square root of the jobs run at a time.
The sample costs a few hundred milliseconds at most and takes no lock beyond a plain read.
"""

from __future__ import annotations

import csv
import math
import queue
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from qsnap_gui.domain.codec import (
    BROKEN_SHAPES,
    blank_entries_wrong_sql,
    broken_sql,
    good_sql,
    same_sql,
    shape_sql,
)
from qsnap_gui.domain.errors import UsageError
from qsnap_gui.engine.snapshot_sql import (
    BAND_TRAITS_SQL,
    ProgressFn,
    reads_by_lookup,
    snapshot_select_sql,
    stale_by_trait_sql,
    tune_group_compute,
)
from qsnap_gui.engine.snapshots import (
    DEFAULT_BATCH_SIZE,
    MAX_ATTEMPTS,
    BandResult,
    CancelFlag,
    JobState,
    Mode,
    snapshot_band,
)
from qsnap_gui.store.interrupt import interrupt_on
from qsnap_gui.store.queries import carrier_tables, display_title


class Category(StrEnum):
    MISSING = "missing"
    BROKEN = "broken"
    STALE = "stale"


CATEGORIES: tuple[Category, ...] = tuple(Category)
DEFAULT_INCLUDE: frozenset[Category] = frozenset({Category.MISSING, Category.BROKEN})
BROKEN_SHAPE_NAMES: tuple[str, ...] = tuple(str(s) for s in BROKEN_SHAPES)

SAMPLE_ROWS = 5000
# small bands' rate is timed on one grouped statement over this many rows: 5,000 took three
# times as long as 2,000 for the same rate
GROUP_SAMPLE_ROWS = 2000
WRITE_COST_FACTOR = 1.5
BAND_OVERHEAD_SECONDS = 0.05
STALE_CHUNK_ROWS = 10_000
# rows per statement of the shape check, whatever the number of bands they belong to
BROKEN_CHUNK_ROWS = 50_000
# a scan of this many rows or more runs its chunks on SCAN_CONNECTIONS connections at once
# (a second connection costs a few milliseconds; the shape check, 20 µs a row of server CPU)
PARALLEL_MIN_ROWS = 20_000
SCAN_CONNECTIONS = 2
# Progress work units per row checked: the deep (stale) check builds a snapshot per row and
# costs several times the shape check on the demo database.
BROKEN_WORK = 1
STALE_WORK = 4

COLUMN = "tp.matching_tags_snapshot"


def _int_array(values: Iterable[int]) -> str:
    """An ``int[]`` parameter as its text: psycopg adapts a list of 15,000 ints in about
    20 ms, this text in 2 (a scan passes the band list five times)."""
    return "{" + ",".join(str(int(v)) for v in values) + "}"


ScanProgressFn = Callable[[int, int, str], None]
T = TypeVar("T")
LogFn = Callable[[str], None]


class ScanCancelled(Exception):
    """The operator cancelled the scan; nothing was changed."""


def _category(value: Category | str) -> Category:
    """A category from its name; a member as it is (a scan of 15,000 bands asks 100,000 times)."""
    return value if isinstance(value, Category) else Category(value)


# a ScanRow's field of each category, looked up without the enum's machinery
_FIELDS: dict[str, str] = {str(c): str(c) for c in Category}


def parse_categories(values: Iterable[str]) -> frozenset[Category]:
    """Categories from operator input ("missing", "broken,stale", …), or a clear UsageError."""
    chosen: set[Category] = set()
    for value in values:
        for word in str(value).split(","):
            word = word.strip().lower()
            if not word:
                continue
            try:
                chosen.add(Category(word))
            except ValueError:
                names = ", ".join(c.value for c in CATEGORIES)
                raise UsageError(f"unknown category {word[:40]!r} (choose from {names})") from None
    if not chosen:
        raise UsageError("choose at least one category: missing, broken, stale")
    return frozenset(chosen)


def effective_categories(chosen: Iterable[Category | str]) -> frozenset[Category]:
    """What a run really fixes: repair mode also fills NULL, force mode rebuilds everything."""
    cats = {_category(c) for c in chosen}
    if Category.STALE in cats:
        cats |= {Category.BROKEN, Category.MISSING}
    if Category.BROKEN in cats:
        cats.add(Category.MISSING)
    return frozenset(cats)


def implied_note(chosen: Iterable[Category | str]) -> str | None:
    """One line saying which categories a choice brings along, or None."""
    chosen = {Category(c) for c in chosen}
    added = effective_categories(chosen) - chosen
    if not added:
        return None
    names = ", ".join(c.value for c in CATEGORIES if c in added)
    if Category.STALE in chosen:
        return (
            f"stale includes {names}: force mode rebuilds every row of a band with stale rows "
            "and rewrites those that differ"
        )
    return f"broken includes {names}: repair mode also fills missing snapshots"


# --- scan -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BandRef:
    target_id: int
    target_title: str
    band_id: int
    label: str
    title: str | None = None


@dataclass(frozen=True)
class ScanRow:
    """Counts of one band. A category that was not checked is None (shown as "-");
    ``offers_left_null`` is None where neither offers nor ad_events exist (or may be read)."""

    target_id: int
    target_title: str
    band_id: int
    label: str
    population: int
    missing: int | None = None
    broken: int | None = None
    stale: int | None = None
    shapes: Mapping[str, int] = field(default_factory=dict)
    offers_left_null: int | None = None

    def count(self, category: Category | str) -> int:
        return getattr(self, _FIELDS.get(category) or _category(category).value) or 0

    def counted(self, category: Category | str) -> bool:
        return getattr(self, _FIELDS.get(category) or _category(category).value) is not None

    def to_json(self) -> dict:
        return {
            "target_id": self.target_id,
            "target_title": self.target_title,
            "band_id": self.band_id,
            "label": self.label,
            "population": self.population,
            "missing": self.missing,
            "broken": self.broken,
            "stale": self.stale,
            "broken_shapes": dict(self.shapes),
            "offers_left_null": self.offers_left_null,
        }


@dataclass(frozen=True)
class ScanResult:
    include: frozenset[Category]
    rows: tuple[ScanRow, ...]
    seconds: float = 0.0
    rows_per_second: float | None = None

    def row(self, band_id: int) -> ScanRow:
        for r in self.rows:
            if r.band_id == band_id:
                return r
        raise KeyError(band_id)

    def totals(self, band_ids: Iterable[int] | None = None) -> dict[str, int]:
        wanted = None if band_ids is None else set(band_ids)
        rows = [r for r in self.rows if wanted is None or r.band_id in wanted]
        out = {"bands": len(rows), "population": sum(r.population for r in rows)}
        out.update({c.value: sum(r.count(c) for r in rows) for c in CATEGORIES})
        out[OFFERS_LEFT_NULL] = sum(r.offers_left_null or 0 for r in rows)
        for shape in BROKEN_SHAPE_NAMES:
            out[shape] = sum(r.shapes.get(shape, 0) for r in rows)
        return out

    def to_json(self) -> dict:
        return {
            "include": [c.value for c in CATEGORIES if c in self.include],
            "bands": [r.to_json() for r in self.rows],
            "totals": self.totals(),
            "scan_seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rows_per_second, 1) if self.rows_per_second else None,
        }


@dataclass(frozen=True)
class TargetChoice:
    id: int
    title: str
    population_status: str


def list_target_choices(conn: Connection) -> list[TargetChoice]:
    """Targets for the wizard's scope page: cheap, no population counts."""
    rows = conn.execute(text("select id, title, population_status from targets order by id")).all()
    return [TargetChoice(int(i), display_title(i, t), s or "not_populated") for i, t, s in rows]


# Labels as queries.band_order gives them (most distinct existing groups first, then lower id;
# "Ring N" is the index in that order), for many targets in one statement.
LABELS_SQL = """
    with b as (
        select b.id, b.target_id, b.title, b.is_bullseye = '1' as bullseye,
               count(distinct g.id) as ngroups
        from target_bands b
        left join target_band_trait_groups bg on bg.target_band_id = b.id
        left join trait_groups g on g.id = bg.trait_group_id
        where b.target_id = any(cast(:targets as int[]))
        group by b.id, b.target_id, b.title, b.is_bullseye
    )
    select target_id, id, title, bullseye,
           row_number() over (partition by target_id order by ngroups desc, id) - 1 as n
    from b order by target_id, n
"""


def resolve_bands(conn: Connection, target_ids: Iterable[int] | None = None) -> list[BandRef]:
    """Bands of the chosen targets (all targets when None), labelled; unknown ids: UsageError.

    Bands whose target row is gone (an orphan band) belong to no target and are not scanned.
    Two statements whatever the number of targets.
    """
    if target_ids is None:
        targets = conn.execute(text("select id, title from targets order by id")).all()
    else:
        wanted = list(dict.fromkeys(int(t) for t in target_ids))
        targets = conn.execute(
            text("select id, title from targets where id = any(:ids) order by id"),
            {"ids": wanted},
        ).all()
        unknown = sorted(set(wanted) - {t[0] for t in targets})
        if unknown:
            noun = "target" if len(unknown) == 1 else "targets"
            verb = "does" if len(unknown) == 1 else "do"
            raise UsageError(f"{noun} {', '.join(map(str, unknown))} {verb} not exist")
    titles = {target_id: display_title(target_id, title) for target_id, title in targets}
    if not titles:
        return []
    rows = conn.execute(text(LABELS_SQL), {"targets": _int_array(titles)}).all()
    return [
        BandRef(
            target_id,
            titles[target_id],
            band_id,
            "Bullseye" if bullseye else f"Ring {index}",
            title,
        )
        for target_id, band_id, title, bullseye, index in rows
    ]


def band_refs(conn: Connection, band_ids: Iterable[int]) -> list[BandRef]:
    """The labelled bands of these ids, in the order given; a band without a target (or
    whose target is gone) does not exist for a scan: UsageError."""
    wanted = list(dict.fromkeys(int(b) for b in band_ids))
    if not wanted:
        return []
    target_ids = conn.execute(
        text(
            "select distinct b.target_id from target_bands b join targets t on t.id = b.target_id "
            "where b.id = any(:ids)"
        ),
        {"ids": wanted},
    ).scalars()
    found = {ref.band_id: ref for ref in resolve_bands(conn, list(target_ids))}
    unknown = [b for b in wanted if b not in found]
    if unknown:
        noun = "band" if len(unknown) == 1 else "bands"
        verb = "does" if len(unknown) == 1 else "do"
        raise UsageError(f"{noun} {', '.join(map(str, unknown[:10]))} {verb} not exist")
    return [found[b] for b in wanted]


def band_ref(conn: Connection, band_id: int) -> BandRef:
    return band_refs(conn, [band_id])[0]


OFFERS_LEFT_NULL = "offers_left_null"
ME_FILE = "tp.me_file_id"

# rows without a me_file are orphans, never written, so never counted as work
POPULATION_SQL = """
    select tp.target_band_id, count(*) from target_populations tp
    where tp.target_band_id = any(cast(:ids as int[])) and tp.me_file_id is not null group by 1
"""
# Written literally as "IS NULL" next to the band filter so that a partial index
# (where matching_tags_snapshot is null) serves it where one exists.
MISSING_SQL = f"""
    select tp.target_band_id, count(*) from target_populations tp
    where tp.target_band_id = any(cast(:ids as int[])) and {COLUMN} is null and tp.me_file_id is not null
    group by 1
"""
# every band of a chunk in one statement: its cost follows the rows, not the bands. Each row's
# shape is computed once (offset 0 keeps the planner from copying it into every use) and
# broken follows from it as broken_sql says: every shape but a good envelope, null values only
# where a blank entry stands for a tag that has a value now. NULL rows, read anyway, come out
# as the shape "missing": the missing count of the same pass. One row per band, a count per
# shape (grouping by band and shape hashed and sent four times as many rows)
_COUNTED_SHAPES: tuple[str, ...] = ("missing", *BROKEN_SHAPE_NAMES)
BROKEN_SQL = f"""
    select x.band, {", ".join(f"count(*) filter (where x.shape = '{s}')" for s in _COUNTED_SHAPES)}
    from (
        select tp.target_band_id as band, {shape_sql(COLUMN)} as shape, {COLUMN} as snap,
               tp.me_file_id as me_file
        from target_populations tp
        where tp.target_band_id = any(cast(:ids as int[])) and tp.me_file_id is not null
        offset 0
    ) x
    where x.shape <> 'envelope'
      and (x.shape <> 'null_values' or {blank_entries_wrong_sql("x.snap", "x.me_file")})
    group by 1
"""
CHUNK_SQL = """
    select max(id), count(*) from (
        select tp.id from target_populations tp
        where tp.target_band_id = :band and tp.me_file_id is not null and tp.id > :after
        order by tp.id limit :n
    ) c
"""
_STALE_BAND_ROWS = (
    "select tp.id, tp.me_file_id from target_populations tp "
    f"where tp.target_band_id = :band and tp.me_file_id is not null and {COLUMN} is not null "
    f"and not ({broken_sql(COLUMN, ME_FILE)})"
)
_STALE_ROWS = f"{_STALE_BAND_ROWS} and tp.id > :after and tp.id <= :upto"
# the band's traits read once, each row's tags looked up by its me_file, and the stored
# snapshots joined back by the chunk's id range: planned freely, a chunk at a million rows
# re-read the band's traits for every row and hashed the whole table (10 s -> 2.5 s a chunk)
STALE_SQL = f"""
    with qsnap_stale_traits as materialized ({BAND_TRAITS_SQL})
    select count(*)
    from ({snapshot_select_sql(_STALE_ROWS, "qsnap_stale_traits", lookup=True)}) s
    join target_populations tp
      on tp.id = s.id and tp.target_band_id = :band and tp.id > :after and tp.id <= :upto
    where not ({same_sql("tp.matching_tags_snapshot", "s.snap")})
"""
# bands large enough for the engine to read their tags by trait are checked as the engine
# builds them, those of one target in one statement (snapshot_sql.stale_by_trait_sql)
STALE_BY_TRAIT_SQL = f"select s.band_id, count(*) from ({stale_by_trait_sql()}) s group by 1"
# many small bands at once, each row rebuilt from its own band's traits; each row's tags are
# looked up by its me_file (a chunk is small): joined on the trait alone first, the tags of a
# trait that thousands of bands ask for would be multiplied by every one of those bands
_STALE_ROWS_MANY = (
    "select tp.id, tp.me_file_id, tp.target_band_id as band_id from target_populations tp "
    "where tp.target_band_id = any(cast(:bands as int[])) "
    f"and tp.me_file_id is not null and {COLUMN} is not null "
    f"and not ({broken_sql(COLUMN, ME_FILE)})"
)
STALE_MANY_SQL = f"""
    select s.band_id, count(*) from ({snapshot_select_sql(_STALE_ROWS_MANY, grouped=True, lookup=True)}) s
    join target_populations tp
      on tp.id = s.id and tp.target_band_id = any(cast(:bands as int[]))
    where not ({same_sql("tp.matching_tags_snapshot", "s.snap")})
    group by 1
"""


def _left_null_sql(table: str) -> str:
    """A carrier table's rows still NULL beside a good snapshot of their population."""
    return f"""
        select c.target_band_id as band from {table} c
        join target_populations tp
          on tp.target_band_id = c.target_band_id and tp.me_file_id = c.me_file_id
        where c.target_band_id = any(cast(:ids as int[])) and c.matching_tags_snapshot is null
          and {good_sql(COLUMN, ME_FILE)}
    """


def _readable_carriers(conn: Connection) -> tuple[str, ...]:
    """The carrier tables this role may read (a read-only scan must not fail on them)."""
    return tuple(
        t
        for t in carrier_tables(conn)
        if conn.execute(
            text(
                "select has_column_privilege(cast(:t as regclass), 'me_file_id', 'SELECT') "
                "and has_column_privilege(cast(:t as regclass), 'target_band_id', 'SELECT') "
                "and has_column_privilege(cast(:t as regclass), 'matching_tags_snapshot', "
                "'SELECT')"
            ),
            {"t": t},
        ).scalar()
    )


def _offers_left_null(conn: Connection, band_ids: list[int]) -> dict[int, int] | None:
    """Per band, offers and ad events left NULL; None where no carrier table can be read."""
    tables = _readable_carriers(conn)
    if not tables:
        return None
    union = " union all ".join(_left_null_sql(t) for t in tables)
    counts = conn.execute(
        text(f"select x.band, count(*) from ({union}) x group by 1"),
        {"ids": _int_array(band_ids)},
    ).all()
    return {band: 0 for band in band_ids} | dict(counts)


@contextmanager
def _interruptible(conn: Connection | list[Connection], cancel: CancelFlag | None):
    """Cancel the running statement (of each connection) on the server as soon as ``cancel``
    is set."""
    conns = conn if isinstance(conn, list) else [conn]
    if cancel is None:
        yield
        return
    try:
        with interrupt_on(cancel, conns):
            yield
    except DBAPIError:
        if cancel.is_set():
            for c in conns:
                c.rollback()
            raise ScanCancelled from None
        raise
    if cancel.is_set():
        raise ScanCancelled


def _broken_shapes(
    conn: Connection, band_ids: list[int]
) -> tuple[dict[int, dict[str, int]], dict[int, int]]:
    """Per band, its broken rows by shape (every shape present, 0 where none), and its missing
    rows."""
    out = {band: dict.fromkeys(BROKEN_SHAPE_NAMES, 0) for band in band_ids}
    missing = dict.fromkeys(band_ids, 0)
    for band, missing_rows, *counts in conn.execute(
        text(BROKEN_SQL), {"ids": _int_array(band_ids)}
    ):
        missing[band] = missing_rows
        out[band] = dict(zip(BROKEN_SHAPE_NAMES, counts, strict=True))
    return out, missing


def _stale_by_trait(conn: Connection, band_ids: list[int]) -> dict[int, int]:
    """The deep check of bands the engine reads by trait, in one statement (0 where none)."""
    tune_group_compute(conn, lookup=False)
    counts = conn.execute(text(STALE_BY_TRAIT_SQL), {"bands": _int_array(band_ids)}).all()
    return dict.fromkeys(band_ids, 0) | dict(counts)


def _stale_by_chunks(
    conn: Connection,
    band_id: int,
    cancel: CancelFlag | None,
    step: Callable[[int], None],
    chunk_rows: int = STALE_CHUNK_ROWS,
) -> int:
    """The deep check of a band read me_file by me_file, in keyset chunks of its rows, so
    that progress and cancel keep up."""
    stale = 0
    after = 0
    while True:
        if cancel is not None and cancel.is_set():
            raise ScanCancelled
        upto, n = conn.execute(
            text(CHUNK_SQL), {"band": band_id, "after": after, "n": chunk_rows}
        ).one()
        if not n:
            return stale
        with _interruptible(conn, cancel):
            stale += conn.execute(
                text(STALE_SQL), {"band": band_id, "after": after, "upto": upto}
            ).scalar_one()
        conn.commit()
        step(n)
        after = upto


def _stale_many(conn: Connection, band_ids: list[int]) -> dict[int, int]:
    """Per band of several small bands, its stale rows (0 where none)."""
    counts = conn.execute(text(STALE_MANY_SQL), {"bands": _int_array(band_ids)}).all()
    return dict.fromkeys(band_ids, 0) | dict(counts)


def _chunks(refs: list[BandRef], populations: Mapping[int, int], rows: int) -> list[list[BandRef]]:
    """Consecutive bands grouped so that each group holds about ``rows`` rows (a larger band
    is a group of its own): one statement per group keeps progress and cancel moving."""
    chunks: list[list[BandRef]] = []
    current: list[BandRef] = []
    size = 0
    for ref in refs:
        n = populations.get(ref.band_id, 0)
        if current and size + n > rows:
            chunks.append(current)
            current, size = [], 0
        current.append(ref)
        size += n
    if current:
        chunks.append(current)
    return chunks


def _chunk_rows(total: int, limit: int) -> int:
    """Rows per chunk: at most ``limit``; a large scan is cut into a multiple of
    ``SCAN_CONNECTIONS`` chunks of equal size, so that every connection has as much to do."""
    if total < PARALLEL_MIN_ROWS:
        return limit
    n = math.ceil(total / limit)
    n += -n % SCAN_CONNECTIONS
    return math.ceil(total / n)


def _each_chunk(
    conn: Connection,
    chunks: list[list[BandRef]],
    cancel: CancelFlag | None,
    work: Callable[[Connection, list[BandRef]], T],
) -> Iterator[tuple[list[BandRef], T]]:
    """``work(connection, chunk)`` of every chunk, yielded in chunk order (each ends its
    transaction). More than one chunk: ``SCAN_CONNECTIONS`` connections run them at once,
    this one and more of its engine, so a large scan uses the server's cores; a cancel
    interrupts every statement."""
    if len(chunks) < 2:
        for chunk in chunks:
            if cancel is not None and cancel.is_set():
                raise ScanCancelled
            with _interruptible(conn, cancel):
                result = work(conn, chunk)
            conn.commit()
            yield chunk, result
        return
    conns = [conn] + [conn.engine.connect() for _ in range(SCAN_CONNECTIONS - 1)]
    free: queue.SimpleQueue[Connection] = queue.SimpleQueue()
    for c in conns:
        free.put(c)

    def run(chunk: list[BandRef]) -> T:
        c = free.get()
        try:
            if cancel is not None and cancel.is_set():
                raise ScanCancelled
            result = work(c, chunk)
            c.commit()
            return result
        finally:
            free.put(c)

    pool = ThreadPoolExecutor(len(conns), thread_name_prefix="qsnap-scan")
    try:
        with _interruptible(conns, cancel):
            try:
                futures = [pool.submit(run, chunk) for chunk in chunks]
                for chunk, future in zip(chunks, futures, strict=True):
                    if cancel is not None and cancel.is_set():
                        raise ScanCancelled
                    yield chunk, future.result()
            finally:
                # every statement has ended (or been interrupted) before a rollback
                pool.shutdown(wait=True, cancel_futures=True)
    finally:
        for c in conns[1:]:
            c.close()


def _count(
    conn: Connection,
    refs: list[BandRef],
    include: frozenset[Category],
    cancel: CancelFlag | None,
    report: ScanProgressFn,
) -> list[ScanRow]:
    """Every band's counts: population and offers left NULL in one statement each, broken
    (with missing) and stale in one statement per chunk of bands (a band larger than a chunk:
    stale per keyset chunk of its rows); missing alone in one statement."""
    ids = [r.band_id for r in refs]
    alone = Category.MISSING in include and Category.BROKEN not in include
    with _interruptible(conn, cancel):
        populations = _populations(conn, ids) if ids else {}
        missing = _missing(conn, ids) if ids and alone else {}
        offers = _offers_left_null(conn, ids) if ids else None
    conn.commit()
    per_row = BROKEN_WORK * (Category.BROKEN in include) + STALE_WORK * (Category.STALE in include)
    total = sum(populations.values()) * per_row
    done = 0
    report(done, total, f"{len(refs)} bands to check")

    def step(units: int, message: str) -> None:
        nonlocal done
        done += units
        report(done, total, message)

    def where(chunk: list[BandRef]) -> str:
        first = chunk[0]
        more = f" and {len(chunk) - 1} more bands" if len(chunk) > 1 else ""
        return f"{first.target_title}: {first.label}{more}"

    rows_of = sum(populations.values())
    shapes: dict[int, dict[str, int]] = {}
    if Category.BROKEN in include:
        chunks = _chunks(refs, populations, _chunk_rows(rows_of, BROKEN_CHUNK_ROWS))
        found = _each_chunk(
            conn, chunks, cancel, lambda c, chunk: _broken_shapes(c, [r.band_id for r in chunk])
        )
        for chunk, (counts, nulls) in found:
            shapes.update(counts)
            if Category.MISSING in include:
                missing.update(nulls)
            step(sum(populations.get(r.band_id, 0) for r in chunk) * BROKEN_WORK, where(chunk))
    stale: dict[int, int] = {}
    if Category.STALE in include:
        chunks = _chunks(refs, populations, _chunk_rows(rows_of, STALE_CHUNK_ROWS))
        # a band larger than a chunk: read by trait with the other such bands of its target,
        # or in keyset chunks of its own rows
        by_trait: dict[int, list[BandRef]] = {}
        for chunk in chunks:
            if len(chunk) > 1:
                continue
            ref = chunk[0]
            if reads_by_lookup(conn, populations.get(ref.band_id, 0)):
                message = where(chunk)
                stale[ref.band_id] = _stale_by_chunks(
                    conn, ref.band_id, cancel, lambda n, m=message: step(n * STALE_WORK, m)
                )
            else:
                by_trait.setdefault(ref.target_id, []).append(ref)
        for target_refs in by_trait.values():
            if cancel is not None and cancel.is_set():
                raise ScanCancelled
            with _interruptible(conn, cancel):
                stale.update(_stale_by_trait(conn, [r.band_id for r in target_refs]))
            conn.commit()
            step(
                sum(populations.get(r.band_id, 0) for r in target_refs) * STALE_WORK,
                where(target_refs),
            )
        found = _each_chunk(
            conn,
            [chunk for chunk in chunks if len(chunk) > 1],
            cancel,
            lambda c, chunk: _stale_many(c, [r.band_id for r in chunk]),
        )
        for chunk, counts in found:
            stale.update(counts)
            step(sum(populations.get(r.band_id, 0) for r in chunk) * STALE_WORK, where(chunk))
    report(total, total, "done")
    return [
        ScanRow(
            ref.target_id,
            ref.target_title,
            ref.band_id,
            ref.label,
            populations.get(ref.band_id, 0),
            missing.get(ref.band_id, 0) if Category.MISSING in include else None,
            sum(shapes[ref.band_id].values()) if Category.BROKEN in include else None,
            stale.get(ref.band_id) if Category.STALE in include else None,
            shapes.get(ref.band_id, {}),
            None if offers is None else offers[ref.band_id],
        )
        for ref in refs
    ]


def _populations(conn: Connection, band_ids: list[int]) -> dict[int, int]:
    return dict(conn.execute(text(POPULATION_SQL), {"ids": _int_array(band_ids)}).all())


def _missing(conn: Connection, band_ids: list[int]) -> dict[int, int]:
    return dict(conn.execute(text(MISSING_SQL), {"ids": _int_array(band_ids)}).all())


def scan(
    conn: Connection,
    target_ids: Iterable[int] | None = None,
    include: Iterable[Category | str] = DEFAULT_INCLUDE,
    cancel: CancelFlag | None = None,
    progress: ScanProgressFn | None = None,
    *,
    measure: bool = True,
) -> ScanResult:
    """Count, per band of the chosen targets, the rows of each included category.

    Reads only, in set-based statements over many bands at once. Ends the connection's
    transaction between steps (no transaction stays open for a long deep check).
    ``progress(done, total, message)`` counts work units; ``cancel`` stops it (also in the
    middle of a statement) with ``ScanCancelled``. With ``measure``, the result carries
    ``rows_per_second`` from ``measure_rate``.
    """
    include = frozenset(Category(c) for c in include)
    report = progress or (lambda done, total, message: None)
    started = time.monotonic()
    rows = _count(conn, resolve_bands(conn, target_ids), include, cancel, report)
    result = ScanResult(include, tuple(rows), time.monotonic() - started)
    if measure:
        rate = measure_rate(conn, plan(result), cancel=cancel)
        result = ScanResult(include, result.rows, time.monotonic() - started, rate)
    return result


def band_counts_many(
    conn: Connection,
    band_ids: Sequence[int],
    include: Iterable[Category | str],
    cancel: CancelFlag | None = None,
) -> dict[int, ScanRow]:
    """Many bands' counts at once, as ``scan`` computes them (used to count the rows fixed
    after a job); a band that does not exist: UsageError."""
    include = frozenset(Category(c) for c in include)
    refs = band_refs(conn, band_ids)
    rows = _count(conn, refs, include, cancel, lambda done, total, message: None)
    return {row.band_id: row for row in rows}


def band_counts(
    conn: Connection,
    band_id: int,
    include: Iterable[Category | str],
    cancel: CancelFlag | None = None,
) -> ScanRow:
    """One band's counts, as ``scan`` computes them (used to count rows fixed after a job)."""
    return band_counts_many(conn, [band_id], include, cancel)[band_id]


# --- plan and estimate ------------------------------------------------------------------------


def mode_for(row: ScanRow, categories: Iterable[Category | str]) -> Mode | None:
    """The engine mode that fixes this band's chosen rows, or None when nothing is to fix."""
    return _mode(row, effective_categories(categories))


def _mode(row: ScanRow, cats: frozenset[Category]) -> Mode | None:
    if Category.STALE in cats and row.count(Category.STALE):
        return Mode.FORCE
    if Category.BROKEN in cats and row.count(Category.BROKEN):
        return Mode.REPAIR
    if Category.MISSING in cats and row.count(Category.MISSING):
        return Mode.MISSING
    if row.offers_left_null:
        # every band job fills its offers and ad events left NULL; this one writes no row
        return Mode.MISSING
    return None


def rows_to_write(row: ScanRow, mode: Mode | None) -> int:
    """The rows the job will write: force mode rebuilds every row of the band but writes
    only those whose snapshot changes, which are the stale, broken and missing ones."""
    if mode is Mode.FORCE:
        return row.count(Category.STALE) + row.count(Category.MISSING) + row.count(Category.BROKEN)
    if mode is Mode.REPAIR:
        return row.count(Category.MISSING) + row.count(Category.BROKEN)
    if mode is Mode.MISSING:
        return row.count(Category.MISSING)
    return 0


@dataclass(frozen=True)
class BandPlan:
    row: ScanRow
    mode: Mode
    categories: frozenset[Category]
    rows: int

    @property
    def band_id(self) -> int:
        return self.row.band_id

    @property
    def rows_built(self) -> int:
        """The rows whose snapshot the job builds: in force mode every row of the band (to
        compare it with the stored one), else the rows it writes."""
        return self.row.population if self.mode is Mode.FORCE else self.rows


def plan(
    scan_result: ScanResult,
    categories: Iterable[Category | str] | None = None,
    band_ids: Iterable[int] | None = None,
) -> list[BandPlan]:
    """The band jobs a run makes (bands with nothing to fix are left out), in scan order."""
    cats = effective_categories(scan_result.include if categories is None else categories)
    wanted = None if band_ids is None else set(band_ids)
    plans = []
    for row in scan_result.rows:
        if wanted is not None and row.band_id not in wanted:
            continue
        mode = _mode(row, cats)
        if mode is not None:
            plans.append(BandPlan(row, mode, cats, rows_to_write(row, mode)))
    return plans


def measure_rate(
    conn: Connection,
    plans: list[BandPlan],
    *,
    sample_rows: int = SAMPLE_ROWS,
    cancel: CancelFlag | None = None,
) -> float | None:
    """Rows per second a band job reaches here, from timing the builder on a sample (no write).

    The sample is the first rows (by id) of up to three of the largest bands to fix, split
    evenly; the build time is scaled by ``WRITE_COST_FACTOR`` for the writes. None when
    there is nothing to sample.
    """
    bands = sorted(plans, key=lambda p: p.row.population, reverse=True)
    bands = [p for p in bands if p.row.population]
    if not bands:
        return None
    if bands[0].row.population < sample_rows // 3 and len(bands) > 3:
        return _group_rate(conn, bands, min(sample_rows, GROUP_SAMPLE_ROWS), cancel)
    bands = bands[:3]
    per_band = max(1, sample_rows // len(bands))
    rows_sql = (
        "select tp.id, tp.me_file_id from target_populations tp "
        "where tp.target_band_id = :band order by tp.id limit :n"
    )
    sql = text(
        "select count(*), sum(length(s.snap::text)) "
        f"from ({snapshot_select_sql(rows_sql, lookup=True)}) s"
    )
    sampled = 0
    seconds = 0.0
    for p in bands:
        started = time.perf_counter()
        with _interruptible(conn, cancel):
            n, _size = conn.execute(sql, {"band": p.band_id, "n": per_band}).one()
        seconds += time.perf_counter() - started
        sampled += n
    conn.commit()
    if not sampled or seconds <= 0:
        return None
    return sampled / seconds / WRITE_COST_FACTOR


# the first rows (by id) of many small bands, each built from its own band's traits
_GROUP_SAMPLE_SQL = f"""
    select count(*), sum(length(s.snap::text)) from ({
    snapshot_select_sql(
        "select tp.id, tp.me_file_id, tp.target_band_id as band_id from target_populations tp "
        "where tp.target_band_id = any(cast(:bands as int[])) order by tp.id limit :n",
        grouped=True,
        lookup=True,
    )
}) s
"""


def _group_rate(
    conn: Connection, bands: list[BandPlan], sample_rows: int, cancel: CancelFlag | None
) -> float | None:
    """Small bands run together as a group job: their rate is that of one statement over
    the rows of many of them (a sample of three tiny bands would time the planning)."""
    chosen: list[int] = []
    total = 0
    for p in bands:
        if total >= sample_rows:
            break
        chosen.append(p.band_id)
        total += p.row.population
    started = time.perf_counter()
    with _interruptible(conn, cancel):
        sampled, _size = conn.execute(
            text(_GROUP_SAMPLE_SQL), {"bands": chosen, "n": sample_rows}
        ).one()
    seconds = time.perf_counter() - started
    conn.commit()
    if not sampled or seconds <= 0:
        return None
    return sampled / seconds / WRITE_COST_FACTOR


def _jobs(plans: list[BandPlan]) -> list[list[BandPlan]]:
    """The jobs a run makes, as the runner makes them: a band job per band with
    ``GROUP_ROWS`` rows or more to write, one group job per mode for the others (a lone
    band: a band job)."""
    from qsnap_gui.engine.runner import GROUP_ROWS

    jobs = [[p] for p in plans if p.rows >= GROUP_ROWS]
    small: dict[Mode, list[BandPlan]] = {}
    for p in plans:
        if p.rows < GROUP_ROWS:
            small.setdefault(p.mode, []).append(p)
    return jobs + list(small.values())


def estimate_seconds(
    scan_result: ScanResult,
    rows_per_second: float | None,
    categories: Iterable[Category | str] | None = None,
    band_ids: Iterable[int] | None = None,
    *,
    parallel: int = 1,
    plans: list[BandPlan] | None = None,
) -> float | None:
    """Wall time of the run: each job (a band, or small bands together: ``_jobs``) costs its
    rows at the measured rate plus a fixed overhead (and, for stale, building every row of
    its bands, which force mode compares with the stored one). Jobs run ``parallel`` at a
    time but share the database's CPUs and disks: k jobs at a time finished about sqrt(k)
    times sooner than one on the demo database (2 CPUs), and the run lasts at least as long
    as its longest job. None without a rate. ``plans``: ``plan``'s answer, when already made."""
    if plans is None:
        plans = plan(scan_result, categories, band_ids)
    if not plans:
        return 0.0
    if not rows_per_second:
        return None
    per_job = []
    for job in _jobs(plans):
        seconds = BAND_OVERHEAD_SECONDS + sum(p.rows for p in job) / rows_per_second
        if any(Category.STALE in p.categories for p in job):
            built = sum(p.row.population for p in job)
            seconds += built / (rows_per_second * WRITE_COST_FACTOR)
        per_job.append(seconds)
    return max(max(per_job), sum(per_job) / math.sqrt(max(1, parallel)))


# --- run --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BandOutcome:
    """How one band's backfill ended, with rows fixed per category (before minus after)."""

    before: ScanRow
    mode: Mode | None
    state: JobState
    after: ScanRow | None = None
    rows_written: int = 0
    attempts: int = 1
    duration: float = 0.0
    error: str | None = None
    categories: frozenset[Category] = DEFAULT_INCLUDE

    @property
    def band_id(self) -> int:
        return self.before.band_id

    @property
    def failed(self) -> bool:
        return self.state is not JobState.SUCCEEDED

    def fixed(self, category: Category | str) -> int | None:
        """Rows of the category that are fixed now; None when it was not counted."""
        category = _category(category)
        if self.after is None or not self.before.counted(category):
            return None
        return max(0, self.before.count(category) - self.after.count(category))

    def remaining(self, category: Category | str) -> int | None:
        category = _category(category)
        if self.after is None or not self.after.counted(category):
            return None
        return self.after.count(category)

    @property
    def offers_fixed(self) -> int | None:
        """Offers and ad events left NULL that hold a snapshot now; None when not counted."""
        if self.after is None or self.before.offers_left_null is None:
            return None
        return max(0, self.before.offers_left_null - (self.after.offers_left_null or 0))

    @property
    def offers_remaining(self) -> int | None:
        return None if self.after is None else self.after.offers_left_null

    @property
    def rewritten_unchanged(self) -> int:
        """Force mode: rows rewritten although they were in no category. The engine leaves a
        row whose snapshot would not change alone, so this stays 0 unless a row changed
        between the counts and the job."""
        if self.mode is not Mode.FORCE:
            return 0
        fixed = sum(self.fixed(c) or 0 for c in CATEGORIES)
        return max(0, self.rows_written - fixed)

    def to_json(self) -> dict:
        return {
            "target_id": self.before.target_id,
            "target_title": self.before.target_title,
            "band_id": self.band_id,
            "label": self.before.label,
            "mode": self.mode.value if self.mode else None,
            "state": self.state.value,
            "before": {c.value: self.before.count(c) for c in CATEGORIES if self.before.counted(c)},
            "fixed": {c.value: self.fixed(c) for c in CATEGORIES if self.fixed(c) is not None},
            "remaining": {
                c.value: self.remaining(c) for c in CATEGORIES if self.remaining(c) is not None
            },
            OFFERS_LEFT_NULL: {
                "before": self.before.offers_left_null,
                "fixed": self.offers_fixed,
                "remaining": self.offers_remaining,
            },
            "rows_written": self.rows_written,
            "rewritten_unchanged": self.rewritten_unchanged,
            "attempts": self.attempts,
            "duration_seconds": round(self.duration, 3),
            "error": self.error,
        }


def outcome_from_result(
    before: ScanRow,
    mode: Mode | None,
    result: BandResult,
    after: ScanRow | None,
    categories: frozenset[Category],
) -> BandOutcome:
    return BandOutcome(
        before,
        mode,
        result.state,
        after,
        rows_written=result.rows_written,
        attempts=result.attempts,
        duration=result.elapsed,
        error=result.error,
        categories=categories,
    )


def run_band(
    engine: Engine,
    band_id: int,
    categories: Iterable[Category | str],
    *,
    before: ScanRow | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: ProgressFn | None = None,
    cancel: CancelFlag | None = None,
    log_line: LogFn | None = None,
    max_attempts: int = MAX_ATTEMPTS,
    backoff: float = 1.0,
) -> BandOutcome:
    """Backfill one band: count (unless ``before`` is given), run the engine in the mode the
    categories need (``mode_for``), count again. Never raises for database trouble in the job
    itself; a failed recount leaves ``after`` None and says so in ``error``."""
    cats = effective_categories(categories)
    if before is None or any(not before.counted(c) for c in cats):
        with engine.connect() as conn:
            before = band_counts(conn, band_id, cats)
    mode = mode_for(before, cats)
    if mode is None:
        return BandOutcome(before, None, JobState.SUCCEEDED, before, categories=cats)
    result = snapshot_band(
        engine,
        band_id,
        mode=mode,
        batch_size=batch_size,
        progress=progress,
        cancel=cancel,
        log_line=log_line,
        max_attempts=max_attempts,
        backoff=backoff,
    )
    after = None
    try:
        with engine.connect() as conn:
            after = band_counts(conn, band_id, cats)
    except DBAPIError as exc:
        from qsnap_gui.store.db import server_reason

        note = f"band {band_id}: could not count the rows after the job ({server_reason(exc)})"
        result = BandResult(
            result.band_id,
            result.state,
            result.rows_written,
            result.rows_total,
            result.batches,
            result.attempts,
            result.elapsed,
            f"{result.error}; {note}" if result.error else note,
        )
    return outcome_from_result(before, mode, result, after, cats)


def backfill_outcomes(
    engine: Engine, plans: list[BandPlan], results: dict[int, BandResult]
) -> dict[int, BandOutcome]:
    """The outcomes of bands backfilled together: each band counted again, all in one pass.

    A failed recount leaves ``after`` None and says so in each band's error, as ``run_band``.
    """
    categories = frozenset().union(*(p.categories for p in plans))
    # the bands as the scan named them: no need to look them up again
    refs = [BandRef(p.row.target_id, p.row.target_title, p.band_id, p.row.label) for p in plans]
    after: dict[int, ScanRow] = {}
    note = None
    try:
        with engine.connect() as conn:
            rows = _count(conn, refs, categories, None, lambda done, total, message: None)
            after = {row.band_id: row for row in rows}
    except DBAPIError as exc:
        from qsnap_gui.store.db import server_reason

        note = f"could not count the rows after the job ({server_reason(exc)})"
    outcomes = {}
    for p in plans:
        result = results[p.band_id]
        if note is not None:
            error = f"band {p.band_id}: {note}"
            result = replace(result, error=f"{result.error}; {error}" if result.error else error)
        outcomes[p.band_id] = outcome_from_result(
            p.row, p.mode, result, after.get(p.band_id), p.categories
        )
    return outcomes


# --- report -----------------------------------------------------------------------------------

REPORT_COLUMNS = [
    "target_id",
    "target_title",
    "band_id",
    "band_label",
    "mode",
    "state",
    "attempts",
    *(f"{c.value}_{what}" for c in CATEGORIES for what in ("before", "fixed", "remaining")),
    *(f"{OFFERS_LEFT_NULL}_{what}" for what in ("before", "fixed", "remaining")),
    "rows_written",
    "rewritten_unchanged",
    "duration_seconds",
    "error",
]


def _cell(value: object) -> object:
    return "" if value is None else value


def report_csv(results: Iterable[BandOutcome], path: str | Path) -> Path:
    """Write one row per band outcome (UTF-8, header first); returns the path."""
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(REPORT_COLUMNS)
        for r in results:
            per_category = []
            for c in CATEGORIES:
                before = r.before.count(c) if r.before.counted(c) else None
                per_category += [_cell(before), _cell(r.fixed(c)), _cell(r.remaining(c))]
            writer.writerow(
                [
                    r.before.target_id,
                    r.before.target_title,
                    r.band_id,
                    r.before.label,
                    r.mode.value if r.mode else "",
                    r.state.value,
                    r.attempts,
                    *per_category,
                    _cell(r.before.offers_left_null),
                    _cell(r.offers_fixed),
                    _cell(r.offers_remaining),
                    r.rows_written,
                    r.rewritten_unchanged,
                    f"{r.duration:.3f}",
                    _cell(r.error),
                ]
            )
    return path
