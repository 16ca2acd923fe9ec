"""Read-side queries shared by the command line and the window: plain dataclasses out."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from sqlalchemy import Connection, text

from qsnap_gui.domain.codec import BROKEN_SHAPES, SHAPES, Shape, blank_entries_wrong_sql, shape_sql
from qsnap_gui.domain.errors import UsageError


@dataclass(frozen=True)
class TraitGroupRef:
    id: int
    title: str


@dataclass(frozen=True)
class BandRow:
    """A band as the application orders and labels it.

    ``groups`` are its distinct existing trait groups; ``dangling_links`` its links to trait
    groups that do not exist (ignored for counting, labels and matching). ``population``
    counts the rows with a me_file id (what jobs write), ``missing`` those whose snapshot is
    NULL: both come from indexes at once. ``shapes`` splits the population by shape,
    ``broken`` counts the rows repair would rebuild and ``orphans`` the rows whose me_file is
    NULL or has no me_files row: these read every snapshot (or every me_file), so the fast
    listing leaves them out (``shapes`` empty) until :func:`band_shape_counts` fills them.
    ``notes`` say what the operator should know about the band.
    """

    id: int
    target_id: int
    title: str | None
    label: str
    is_bullseye: bool
    groups: tuple[TraitGroupRef, ...]
    population: int = 0
    shapes: dict[str, int] = field(default_factory=dict)
    dangling_links: int = 0
    orphans: int = 0
    broken: int = 0
    notes: tuple[str, ...] = ()
    missing: int = 0

    @property
    def shapes_known(self) -> bool:
        """Whether the per-shape counts were read (the fast listing leaves them out)."""
        return bool(self.shapes)


@dataclass(frozen=True)
class ShapeCounts:
    """A band's rows per snapshot shape, how many of them repair would rebuild, and its
    orphans."""

    shapes: dict[str, int]
    broken: int
    orphans: int = 0


@dataclass(frozen=True)
class FastCounts:
    """What the indexes tell about a band without reading a snapshot."""

    population: int = 0
    missing: int = 0


@dataclass(frozen=True)
class OrphanCounts:
    """Population rows that belong to no target's band, so no job ever touches them."""

    no_band: int = 0  # target_band_id is NULL
    deleted_band: int = 0  # the band row is gone
    band_without_target: int = 0  # the band's target_id is NULL or its target is gone

    @property
    def total(self) -> int:
        return self.no_band + self.deleted_band + self.band_without_target


INT4_MAX = 2**31 - 1


def parse_id(value: object, what: str) -> int:
    """An id from operator input, or a clear UsageError."""
    shown = str(value).strip()
    # ASCII digits only: int() would also take "1_0" (as 10) and non-ASCII digits
    if not re.fullmatch(r"[+-]?[0-9]+", shown):
        raise UsageError(f"{what} id must be a whole number, got {shown[:40]!r}")
    number = int(shown[:40])  # longer: out of range anyway (and int() refuses 4,300 digits)
    if number <= 0 or number > INT4_MAX or len(shown) > 40:
        raise UsageError(
            f"{what} id must be a positive number up to {INT4_MAX} (ids are PostgreSQL "
            f"integers), got {shown[:40]}"
        )
    return number


def _links(n: int) -> str:
    return "1 link to a deleted trait group" if n == 1 else f"{n} links to deleted trait groups"


def _names(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def tie_note(tied: list[BandRow]) -> str:
    """What the application does with bands of as many groups (``tied`` in id order)."""
    n = len(tied[0].groups)
    ids = [str(b.id) for b in tied]
    inner = ids[-1] if len(ids) == 2 else " inside ".join(reversed(ids[1:]))
    labels = _names([b.label for b in tied[1:]])
    them = "it" if len(tied) == 2 else "them"
    return (
        f"bands {_names(ids)} have {n} group{'' if n == 1 else 's'} each: the application "
        f"nests {inner} inside {ids[0]} while labelling {them} {labels}"
    )


def band_order(conn: Connection, target_id: int) -> list[BandRow]:
    """The target's bands in label order (most trait groups first, then lower id first),
    labelled per DOMAIN.md; groups are the distinct existing ones."""
    rows = conn.execute(
        text(
            """
            select b.id, b.title, b.is_bullseye = '1' as bullseye,
                   count(distinct g.id) as ngroups,
                   count(bg.id) filter (where g.id is null) as dangling
            from target_bands b
            left join target_band_trait_groups bg on bg.target_band_id = b.id
            left join trait_groups g on g.id = bg.trait_group_id
            where b.target_id = :t
            group by b.id, b.title, b.is_bullseye
            order by ngroups desc, b.id
            """
        ),
        {"t": target_id},
    ).all()
    groups: dict[int, list[TraitGroupRef]] = {r[0]: [] for r in rows}
    if rows:
        for band_id, group_id, title in conn.execute(
            text(
                "select distinct bg.target_band_id, g.id, g.title "
                "from target_band_trait_groups bg join trait_groups g on g.id = bg.trait_group_id "
                "where bg.target_band_id = any(:ids) order by 1, 2"
            ),
            {"ids": list(groups)},
        ):
            shown = title if title is not None else f"(untitled group {group_id})"
            groups[band_id].append(TraitGroupRef(group_id, shown))
    bands = [
        BandRow(
            band_id,
            target_id,
            title,
            "Bullseye" if bullseye else f"Ring {index}",
            bool(bullseye),
            tuple(groups[band_id]),
            dangling_links=dangling,
        )
        for index, (band_id, title, bullseye, _n, dangling) in enumerate(rows)
    ]
    notes: dict[int, list[str]] = {b.id: [] for b in bands}
    by_count: dict[int, list[BandRow]] = {}
    for b in bands:
        by_count.setdefault(len(b.groups), []).append(b)
        if b.dangling_links:
            notes[b.id].append(_links(b.dangling_links))
    for tied in by_count.values():
        if len(tied) > 1:
            note = tie_note(tied)
            for b in tied:
                notes[b.id].append(note)
    return [replace(b, notes=tuple(notes[b.id])) for b in bands]


def target_notes(bands: list[BandRow]) -> list[str]:
    """The bands' notes for the whole target, each once, the band named where it is its own."""
    out: list[str] = []
    for b in bands:
        for note in b.notes:
            line = note if note.startswith("bands ") else f"band {b.id} ({b.label}): {note}"
            if line not in out:
                out.append(line)
    return out


def refresh_order(bands: list[BandRow]) -> list[BandRow]:
    """Refresh Population's order: fewest groups first, then lower id first (outermost first)."""
    return sorted(bands, key=lambda b: (len(b.groups), b.id))


_POPULATION_SQL = (
    "select tp.target_band_id, count(*) from target_populations tp "
    "where tp.target_band_id = any(:ids) and tp.me_file_id is not null group by 1"
)
_MISSING_SQL = (
    "select tp.target_band_id, count(*) from target_populations tp "
    "where tp.matching_tags_snapshot is null and tp.target_band_id = any(:ids) "
    "and tp.me_file_id is not null group by 1"
)
_BOTH_SQL = (
    "select tp.target_band_id, count(*), "
    "count(*) filter (where tp.matching_tags_snapshot is null) from target_populations tp "
    "where tp.target_band_id = any(:ids) and tp.me_file_id is not null group by 1"
)


ONE_PASS_NULL_SHARE = 0.25  # from this share of NULL snapshots on, one read counts both
ONE_PASS_DEAD_SHARE = 0.05  # from this share of dead row versions on, likewise


@dataclass(frozen=True)
class TableState:
    """How settled target_populations is, from two estimates (never a count) that choose how
    to count it exactly.

    ``null_share`` is the share of NULL snapshots in the planner's statistics (from the last
    ANALYZE): when they are many, the partial index on NULL snapshots is no shortcut.
    ``dead_share`` is dead row versions per live row in the server's activity counters (they
    follow every commit within a second; VACUUM resets them). A page holding a dead version
    is not all-visible, so an index-only scan fetches each of its entries from the table:
    while a job rewrites a million rows, counting populations from the unique index grows
    from 0.2 s to 2.5 s, and orphans (the same index against me_files) from 0.4 s to 1.1 s,
    where reading the table stays at 0.2-0.3 s and 0.5 s.
    """

    null_share: float
    dead_share: float

    @property
    def being_rewritten(self) -> bool:
        return self.dead_share >= ONE_PASS_DEAD_SHARE

    @property
    def one_pass(self) -> bool:
        """Count population and NULL snapshots in one read of the table, not two indexes."""
        return self.null_share >= ONE_PASS_NULL_SHARE or self.being_rewritten


def table_state(conn: Connection) -> TableState:
    null_share, dead, live = conn.execute(
        text(
            "select (select s.null_frac from pg_stats s join pg_namespace n "
            "on n.nspname = s.schemaname where n.oid = c.relnamespace "
            "and s.tablename = c.relname and s.attname = 'matching_tags_snapshot'), "
            "a.n_dead_tup, greatest(a.n_live_tup, c.reltuples) from pg_class c "
            "left join pg_stat_all_tables a on a.relid = c.oid "
            "where c.oid = to_regclass('target_populations')"
        )
    ).one()
    # a database just copied has no activity counters yet: its live rows are at least what
    # the last VACUUM or ANALYZE counted
    return TableState(float(null_share or 0.0), (dead or 0) / max(float(live or 0), 1.0))


def counts_in_one_pass(conn: Connection) -> bool:
    return table_state(conn).one_pass


def _count(conn: Connection, sql: str, params: dict[str, object] | None = None) -> list[tuple]:
    """Run a count over target_populations that reads no snapshot; while the table is being
    rewritten, without index-only scans (set in a savepoint, rolled back), so the planner
    reads the table rather than fetching each index entry from it."""
    if not table_state(conn).being_rewritten:
        return list(conn.execute(text(sql), params or {}).all())
    savepoint = conn.begin_nested()
    try:
        conn.execute(text("set local enable_indexonlyscan = off"))
        return list(conn.execute(text(sql), params or {}).all())
    finally:
        savepoint.rollback()


def band_populations(conn: Connection, band_ids: list[int]) -> dict[int, int]:
    """Rows with a me_file id per band, from the unique (target_band_id, me_file_id) index
    alone (an index-only scan): what the targets list shows first. Bands without rows are
    left out."""
    if not band_ids:
        return {}
    return dict(conn.execute(text(_POPULATION_SQL), {"ids": band_ids}).all())


def band_missing(conn: Connection, band_ids: list[int]) -> dict[int, int]:
    """NULL snapshots (of rows with a me_file id) per band; bands without any are left out.

    The partial index on NULL snapshots finds them when they are few; when most rows are
    NULL, the planner reads the table instead."""
    if not band_ids:
        return {}
    return dict(conn.execute(text(_MISSING_SQL), {"ids": band_ids}).all())


def band_counts(conn: Connection, band_ids: list[int]) -> dict[int, FastCounts]:
    """Population and NULL snapshots per band, without reading a snapshot or me_files;
    bands without rows are left out.

    When the table is settled, the population comes from the unique (target_band_id,
    me_file_id) index and the NULLs from the partial index on NULL snapshots. Otherwise
    (:func:`counts_in_one_pass`: right after a refresh, while jobs write) one read of the
    table counts both: at a million rows, all NULL, it takes a third less than an index scan
    followed by a table scan.
    """
    if not band_ids:
        return {}
    if counts_in_one_pass(conn):
        rows = conn.execute(text(_BOTH_SQL), {"ids": band_ids}).all()
        return {band: FastCounts(n, missing) for band, n, missing in rows}
    population = band_populations(conn, band_ids)
    missing = band_missing(conn, band_ids)
    return {band: FastCounts(n, missing.get(band, 0)) for band, n in population.items()}


def _by_target(
    conn: Connection, counts: list[str], condition: str, target_ids: list[int] | None
) -> list[tuple]:
    """Counts of target_populations rows (``counts``: aggregates over ``tp``) per target, in
    one statement: counted per band first, as the indexes are, then summed over each target's
    bands; no list of band ids to send, however many bands there are."""
    only_bands = only_targets = ""
    params: dict[str, object] = {}
    if target_ids is not None:
        only_bands = (
            "and tp.target_band_id = any(array("
            "select o.id from target_bands o where o.target_id = any(:t))) "
        )
        only_targets = "and b.target_id = any(:t) "
        params = {"t": target_ids}
    inner = ", ".join(f"{c} as c{i}" for i, c in enumerate(counts))
    outer = ", ".join(f"cast(sum(x.c{i}) as bigint)" for i in range(len(counts)))
    return _count(
        conn,
        f"select b.target_id, {outer} from ("
        f"select tp.target_band_id, {inner} from target_populations tp "
        f"where {condition} {only_bands}group by 1) x "
        "join target_bands b on b.id = x.target_band_id "
        f"where b.target_id is not null {only_targets}group by 1",
        params,
    )


def target_populations(conn: Connection, target_ids: list[int] | None = None) -> dict[int, int]:
    """Rows with a me_file id per target (targets without any are left out), from the unique
    (target_band_id, me_file_id) index; while :func:`counts_in_one_pass`, from one read of
    the table instead."""
    if counts_in_one_pass(conn):
        return {t: c.population for t, c in _one_pass_by_target(conn, target_ids).items()}
    return dict(_by_target(conn, ["count(*)"], "tp.me_file_id is not null", target_ids))


def target_missing(conn: Connection, target_ids: list[int] | None = None) -> dict[int, int]:
    """NULL snapshots (of rows with a me_file id) per target; targets without any are left
    out."""
    condition = "tp.me_file_id is not null and tp.matching_tags_snapshot is null"
    return dict(_by_target(conn, ["count(*)"], condition, target_ids))


def _one_pass_by_target(conn: Connection, target_ids: list[int] | None) -> dict[int, FastCounts]:
    rows = _by_target(
        conn,
        ["count(*)", "count(*) filter (where tp.matching_tags_snapshot is null)"],
        "tp.me_file_id is not null",
        target_ids,
    )
    return {target: FastCounts(n, missing) for target, n, missing in rows}


def target_counts(conn: Connection, target_ids: list[int] | None = None) -> dict[int, FastCounts]:
    """Population and NULL snapshots per target, chosen as :func:`band_counts` chooses."""
    if counts_in_one_pass(conn):
        return _one_pass_by_target(conn, target_ids)
    population = dict(_by_target(conn, ["count(*)"], "tp.me_file_id is not null", target_ids))
    missing = target_missing(conn, target_ids)
    return {t: FastCounts(n, missing.get(t, 0)) for t, n in population.items()}


def target_orphans(conn: Connection, target_ids: list[int] | None = None) -> dict[int, int]:
    """Rows per target whose me_file is NULL or has no me_files row (see
    :func:`band_orphans`)."""
    condition = "not exists (select 1 from me_files f where f.id = tp.me_file_id)"
    return dict(_by_target(conn, ["count(*)"], condition, target_ids))


def band_orphans(conn: Connection, band_ids: list[int]) -> dict[int, int]:
    """Rows per band whose me_file is NULL or has no me_files row (bands without any are left
    out). One pass over every me_files id: cheap next to the shapes, too slow for the instant
    views at a million rows."""
    if not band_ids:
        return {}
    return dict(
        _count(
            conn,
            "select tp.target_band_id, count(*) from target_populations tp "
            "where tp.target_band_id = any(:ids) "
            "and not exists (select 1 from me_files f where f.id = tp.me_file_id) group by 1",
            {"ids": band_ids},
        )
    )


def band_shape_counts(conn: Connection, band_ids: list[int]) -> dict[int, ShapeCounts]:
    """Rows per shape, broken rows and orphans of each band: reads every snapshot, so it is
    slow on big bands and the window runs it in the background, once per band until a job
    ends."""
    if not band_ids:
        return {}
    counts = conn.execute(
        text(
            f"""
            select x.band, x.shape, count(*),
                   count(*) filter (where case when x.shape = 'null_values'
                                    then {blank_entries_wrong_sql("x.s", "x.m")} else false end)
            from (select tp.target_band_id as band, tp.matching_tags_snapshot as s,
                         tp.me_file_id as m, {shape_sql("tp.matching_tags_snapshot")} as shape
                  from target_populations tp
                  where tp.target_band_id = any(:ids) and tp.me_file_id is not null) x
            group by 1, 2
            """
        ),
        {"ids": band_ids},
    ).all()
    per_band: dict[int, dict[str, int]] = {b: dict.fromkeys(map(str, SHAPES), 0) for b in band_ids}
    broken: dict[int, int] = dict.fromkeys(band_ids, 0)
    for band_id, shape, count, wrong_blanks in counts:
        per_band[band_id][str(shape)] = count
        if shape == Shape.NULL_VALUES:
            broken[band_id] += wrong_blanks
        elif shape in BROKEN_SHAPES:
            broken[band_id] += count
    orphans = band_orphans(conn, band_ids)
    return {b: ShapeCounts(per_band[b], broken[b], orphans.get(b, 0)) for b in band_ids}


def with_shapes(band: BandRow, counts: ShapeCounts) -> BandRow:
    """The band with its per-shape, broken and orphan counts; population and missing stay
    the indexes' (fresher than a cached shape count)."""
    return replace(band, shapes=dict(counts.shapes), broken=counts.broken, orphans=counts.orphans)


def list_bands(conn: Connection, target_id: int, *, shapes: bool = True) -> list[BandRow]:
    """Bands with population and missing counts, and with ``shapes`` the per-shape, broken
    and orphan counts too (which read every snapshot)."""
    bands = band_order(conn, target_id)
    ids = [b.id for b in bands]
    fast = band_counts(conn, ids)
    bands = [
        replace(
            b,
            population=fast.get(b.id, FastCounts()).population,
            missing=fast.get(b.id, FastCounts()).missing,
        )
        for b in bands
    ]
    if not shapes:
        return bands
    slow = band_shape_counts(conn, ids)
    return [with_shapes(b, slow[b.id]) for b in bands]


def population_orphans(conn: Connection) -> OrphanCounts:
    """Population rows outside every target's bands (NULL band, deleted band, band of no
    target)."""
    (row,) = _count(
        conn,
        """
        select count(*) filter (where tp.target_band_id is null),
               count(*) filter (where tp.target_band_id is not null and b.id is null),
               count(*) filter (where b.id is not null and t.id is null)
        from target_populations tp
        left join target_bands b on b.id = tp.target_band_id
        left join targets t on t.id = b.target_id
        where tp.target_band_id is null or b.id is null or t.id is null
        """,
    )
    return OrphanCounts(*row)


def carrier_tables(conn: Connection) -> tuple[str, ...]:
    """Which of offers and ad_events exist here with the columns that carry a snapshot.

    Read from the catalogue, which shows a table whatever the role may do with it.
    """
    return tuple(
        conn.execute(
            text(
                "select t.name from unnest(cast(:tables as text[])) with ordinality as t(name, n) "
                "where (select count(*) from pg_attribute a "
                "       where a.attrelid = to_regclass(t.name) and a.attnum > 0 "
                "       and not a.attisdropped and a.attname = any(:columns)) = 3 "
                "order by t.n"
            ),
            {
                "tables": ["offers", "ad_events"],
                "columns": ["me_file_id", "target_band_id", "matching_tags_snapshot"],
            },
        ).scalars()
    )


def band_target(conn: Connection, band_id: int) -> int:
    """The target a band belongs to, or a clear UsageError."""
    row = conn.execute(
        text("select target_id from target_bands where id = :b"), {"b": band_id}
    ).first()
    if row is None:
        raise UsageError(f"band {band_id} does not exist")
    if row[0] is None:
        raise UsageError(f"band {band_id} belongs to no target (its target_id is NULL)")
    return row[0]


def display_title(target_id: int, title: str | None) -> str:
    return title if title is not None else f"(untitled #{target_id})"


def require_target(conn: Connection, target_id: int) -> str:
    """The target's title for messages ("(untitled #5)" when NULL), or a clear UsageError."""
    row = conn.execute(text("select title from targets where id = :t"), {"t": target_id}).first()
    if row is None:
        raise UsageError(f"target {target_id} does not exist")
    return display_title(target_id, row[0])
