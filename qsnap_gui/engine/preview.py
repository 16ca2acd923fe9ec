"""Preview Refresh Population: what a refresh of a target would change, without writing.

The new membership is the refresh's own (``population.membership_sql``), run as CTEs inside one
``READ ONLY`` transaction (which may not create the temp tables the refresh uses), and compared
with the target's populations pair by pair exactly as the refresh's diff does: a (me_file, band)
pair in both is kept, a new one added, a gone one removed; a me_file with a removed and an added
pair moved. Kept rows are what the refresh leaves untouched, so their snapshots are checked for
staleness (``snapshot_select_sql`` + ``same_sql``, as the backfill's deep check); offers whose
(me_file, band) pair will not exist afterwards are counted (the application's
CleanupInvalidOffersWorker acts on them). Works with ``--read-only`` and a browse-only role.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from qsnap_gui.domain.codec import good_sql, same_sql
from qsnap_gui.domain.errors import QsnapError
from qsnap_gui.domain.jobs import CancelFlag
from qsnap_gui.engine.backfill import CHUNK_SQL
from qsnap_gui.engine.population import membership_sql
from qsnap_gui.engine.snapshot_sql import (
    BAND_TRAITS_SQL,
    reads_by_lookup,
    snapshot_select_sql,
    stale_by_trait_sql,
    tune_group_compute,
)
from qsnap_gui.store.db import Database, server_reason
from qsnap_gui.store.interrupt import interrupt_on
from qsnap_gui.store.queries import (
    band_order,
    carrier_tables,
    refresh_order,
    require_target,
)

SAMPLE_SIZE = 20


class PreviewFailed(QsnapError):
    pass


class PreviewCancelled(QsnapError):
    pass


@dataclass(frozen=True)
class BandPreview:
    """One band's side of the diff. ``added`` and ``removed`` include the rows that move in
    and out; ``offers_left`` counts the band's offers whose pair will not exist after the
    refresh, ``offers_by_refresh`` those of them whose pair exists now (None: offers not
    readable); ``stale`` is None when the preview did not check (``stale=False``)."""

    band_id: int
    label: str
    title: str | None
    kept: int = 0
    added: int = 0
    removed: int = 0
    moved_in: int = 0
    moved_out: int = 0
    stale: int | None = None
    offers_left: int | None = None
    offers_by_refresh: int | None = None

    @property
    def before(self) -> int:
        return self.kept + self.removed

    @property
    def after(self) -> int:
        return self.kept + self.added

    def to_json(self) -> dict:
        return asdict(self) | {"before": self.before, "after": self.after}


@dataclass(frozen=True)
class BandMove:
    """Me_files leaving ``from_band`` for ``to_band`` (both bands of the target)."""

    from_band: int
    to_band: int
    count: int


@dataclass(frozen=True)
class MovedMeFile:
    me_file_id: int
    from_band: int
    to_band: int


@dataclass
class RefreshPreview:
    target_id: int
    title: str
    status: str
    bands: list[BandPreview] = field(default_factory=list)  # label order, Bullseye first
    moves: list[BandMove] = field(default_factory=list)
    moved: int = 0  # distinct me_files that change band
    sample: list[MovedMeFile] = field(default_factory=list)
    offers_readable: bool = False
    stale_checked: bool = False

    def label(self, band_id: int) -> str:
        return next((b.label for b in self.bands if b.band_id == band_id), f"band {band_id}")

    @property
    def kept(self) -> int:
        return sum(b.kept for b in self.bands)

    @property
    def added(self) -> int:
        return sum(b.added for b in self.bands)

    @property
    def removed(self) -> int:
        return sum(b.removed for b in self.bands)

    @property
    def stale(self) -> int | None:
        return sum(b.stale or 0 for b in self.bands) if self.stale_checked else None

    @property
    def changes(self) -> bool:
        return bool(self.added or self.removed)

    def to_json(self) -> dict:
        return {
            "target_id": self.target_id,
            "title": self.title,
            "status": self.status,
            "totals": {
                "kept": self.kept,
                "added": self.added,
                "removed": self.removed,
                "moved": self.moved,
                "stale": self.stale,
                "offers_left": (
                    sum(b.offers_left or 0 for b in self.bands) if self.offers_readable else None
                ),
            },
            "bands": [b.to_json() for b in self.bands],
            "moves": [asdict(m) for m in self.moves],
            "sample": [asdict(m) for m in self.sample],
        }


PAIRS_CTES = """
    old as materialized (
        select tp.id, tp.me_file_id, tp.target_band_id as band_id
        from target_populations tp
        where tp.target_band_id = any(cast(:band_ids as bigint[])) and tp.me_file_id is not null
    ),
    pairs as materialized (
        select coalesce(o.me_file_id, m.me_file_id) as me_file_id, o.id,
               o.band_id as old_band, m.band_id as new_band
        from old o full join qsnap_membership m
          on m.me_file_id = o.me_file_id and m.band_id = o.band_id
    ),
    moves as materialized (
        select g.me_file_id, g.old_band as from_band, a.new_band as to_band
        from pairs g join pairs a on a.me_file_id = g.me_file_id and a.old_band is null
        where g.new_band is null
    )"""

# every part yields (kind, a, b, n, m)
COUNTS_SQL = """
    select 'pair', cast(old_band as bigint), new_band, count(*), cast(null as bigint)
    from pairs group by 2, 3
    union all
    select 'move', from_band, to_band, count(*), null from moves group by 2, 3
    union all
    select 'moved_in', to_band, null, count(distinct me_file_id), null from moves group by 2
    union all
    select 'moved_out', from_band, null, count(distinct me_file_id), null from moves group by 2
    union all
    select 'moved', null, null, count(distinct me_file_id), null from moves
    union all
    select 'sample', from_band, to_band, me_file_id, null
    from (select * from moves order by me_file_id, from_band limit :sample) s"""

OFFERS_SQL = """
    select 'offers', c.target_band_id, null, count(*),
           count(*) filter (where exists (select 1 from target_populations tp
                                          where tp.target_band_id = c.target_band_id
                                            and tp.me_file_id = c.me_file_id))
    from offers c
    where c.target_band_id = any(cast(:band_ids as bigint[]))
      and not exists (select 1 from qsnap_membership m
                      where m.me_file_id = c.me_file_id and m.band_id = c.target_band_id)
    group by 2"""

COLUMN = "tp.matching_tags_snapshot"


# kept rows: the current rows, one band's keyset chunk at a time, with a good snapshot that
# differs (up to ties) from the one the snapshot engine would build now (the backfill's deep
# check); the membership then says which of those stay in their band
STALE_CHUNK_ROWS = 10_000
STALE_BAND_ROWS_SQL = (
    "select tp.id, tp.me_file_id from target_populations tp "
    "where tp.target_band_id = :band "
    f"and tp.me_file_id is not null and {good_sql(COLUMN, 'tp.me_file_id')}"
)
STALE_ROWS_SQL = f"{STALE_BAND_ROWS_SQL} and tp.id > :after and tp.id <= :upto"
STALE_ME_FILES_SQL = f"""
    with qsnap_stale_traits as materialized ({BAND_TRAITS_SQL})
    select tp.me_file_id
    from ({snapshot_select_sql(STALE_ROWS_SQL, "qsnap_stale_traits", lookup=True)}) s
    join target_populations tp
      on tp.id = s.id and tp.target_band_id = :band and tp.id > :after and tp.id <= :upto
    where not ({same_sql(COLUMN, "s.snap")})"""
# bands large enough for the engine to read their tags by trait: one statement built as the
# engine builds them, their tags read once in table order (as the backfill's deep check)
STALE_BY_TRAIT_SQL = f"select s.me_file_id, s.band_id from ({stale_by_trait_sql()}) s"
BAND_ROWS_SQL = (
    "select count(*) from target_populations "
    "where target_band_id = :band and me_file_id is not null"
)
STALE_KEPT_SQL = """
    select 'stale', s.band_id, null, count(*), null
    from unnest(cast(:stale_me_files as int[]), cast(:stale_bands as int[])) s(me_file_id, band_id)
    join qsnap_membership m on m.me_file_id = s.me_file_id and m.band_id = s.band_id
    group by 2"""


def _stale_pairs(conn: Connection, band_ids: list[int]) -> tuple[list[int], list[int]]:
    """(me_file ids, band ids) of the current rows whose snapshot is stale.

    As the backfill's deep check: the bands the engine reads by trait in one statement (with
    the settings that build needs, then the transaction's own back), a smaller one in
    keyset chunks of lookups (one lookup statement over a million rows, with the
    membership's CTEs estimated at a hundredth of their rows, ran for more than 13 minutes).
    """
    me_files: list[int] = []
    bands: list[int] = []
    by_trait: list[int] = []
    for band_id in band_ids:
        rows = conn.execute(text(BAND_ROWS_SQL), {"band": band_id}).scalar_one()
        if not reads_by_lookup(conn, rows):
            by_trait.append(band_id)
            continue
        after = 0
        while True:
            upto, n = conn.execute(
                text(CHUNK_SQL), {"band": band_id, "after": after, "n": STALE_CHUNK_ROWS}
            ).one()
            if not n:
                break
            found = conn.execute(
                text(STALE_ME_FILES_SQL), {"band": band_id, "after": after, "upto": upto}
            ).scalars()
            for me_file_id in found:
                me_files.append(me_file_id)
                bands.append(band_id)
            after = upto
    if by_trait:
        # the build's settings last until the savepoint is rolled back
        with conn.begin_nested() as settings:
            tune_group_compute(conn, lookup=False)
            pairs = conn.execute(
                text(STALE_BY_TRAIT_SQL), {"bands": "{" + ",".join(map(str, by_trait)) + "}"}
            ).all()
            settings.rollback()
        for me_file_id, band_id in pairs:
            me_files.append(me_file_id)
            bands.append(band_id)
    return me_files, bands


def _offers_readable(conn: Connection) -> bool:
    """Whether offers exist here and this role may read the columns the count reads."""
    if "offers" not in carrier_tables(conn):
        return False
    return bool(
        conn.execute(
            text(
                "select has_column_privilege('offers', 'me_file_id', 'SELECT') "
                "and has_column_privilege('offers', 'target_band_id', 'SELECT')"
            )
        ).scalar()
    )


def preview_refresh(
    conn: Connection, target_id: int, *, sample: int = SAMPLE_SIZE, stale: bool = True
) -> RefreshPreview:
    """What Refresh Population of the target would do now; writes nothing.

    The stale check builds the snapshot of every current row: it costs more than the rest
    (at a million me_files, on a quiet machine, 30 s in all against 9 s without it),
    so ``stale=False`` leaves it out.

    Runs in a transaction of its own, read-only and repeatable-read (one consistent view):
    call it on a connection with no transaction open; the transaction is rolled back.
    """
    if conn.in_transaction():
        conn.rollback()
    conn.execute(text("set transaction isolation level repeatable read, read only"))
    try:
        return _preview(conn, target_id, sample, stale)
    finally:
        conn.rollback()


def _preview(conn: Connection, target_id: int, sample: int, stale: bool) -> RefreshPreview:
    title = require_target(conn, target_id)
    status = conn.execute(
        text("select coalesce(population_status, 'not_populated') from targets where id = :t"),
        {"t": target_id},
    ).scalar_one()
    bands = band_order(conn, target_id)
    preview = RefreshPreview(target_id, title, status, stale_checked=stale)
    if not bands:
        return preview
    band_ids = [b.id for b in refresh_order(bands)]
    conn.execute(text("set local work_mem = '256MB'"))
    # the membership's CTEs are estimated at a hundredth of their rows: the pairs were then
    # sorted for a merge join, 9 s of 37 at a million me_files, against 6 s hashed
    conn.execute(text("set local enable_mergejoin = off"))
    member = membership_sql(conn, band_ids)
    preview.offers_readable = _offers_readable(conn)
    ctes = [member.as_ctes(), PAIRS_CTES]
    parts = [COUNTS_SQL]
    params = member.params | {"band_ids": band_ids, "sample": sample}
    if preview.offers_readable:
        parts.append(OFFERS_SQL)
    if stale:
        me_files, stale_bands = _stale_pairs(conn, band_ids)
        parts.append(STALE_KEPT_SQL)
        params |= {"stale_me_files": me_files, "stale_bands": stale_bands}
    sql = "with " + ",\n".join(ctes) + "\n" + "\nunion all\n".join(parts)
    rows = conn.execute(text(sql), params).all()
    return _assemble(preview, bands, rows)


def _assemble(preview: RefreshPreview, bands: list, rows: list) -> RefreshPreview:
    counts: dict[int, dict[str, int | None]] = {
        b.id: {
            "kept": 0,
            "added": 0,
            "removed": 0,
            "moved_in": 0,
            "moved_out": 0,
            "stale": 0 if preview.stale_checked else None,
            "offers_left": 0 if preview.offers_readable else None,
            "offers_by_refresh": 0 if preview.offers_readable else None,
        }
        for b in bands
    }
    for kind, a, b, n, m in rows:
        if kind == "pair":
            if a is None:
                counts[b]["added"] += n
            elif b is None:
                counts[a]["removed"] += n
            else:
                counts[a]["kept"] += n
        elif kind == "move":
            preview.moves.append(BandMove(a, b, n))
        elif kind in ("moved_in", "moved_out"):
            # me_files, not moves: one with rows in two bands (legacy data) leaves both
            counts[a][kind] = n
        elif kind == "moved":
            preview.moved = n
        elif kind == "sample":
            preview.sample.append(MovedMeFile(n, a, b))
        elif kind == "stale":
            counts[a]["stale"] = n
        elif kind == "offers":
            counts[a]["offers_left"] = n
            counts[a]["offers_by_refresh"] = m
    labels = {b.id: i for i, b in enumerate(bands)}
    preview.moves.sort(key=lambda mv: (labels[mv.from_band], labels[mv.to_band]))
    preview.sample.sort(key=lambda s: (s.me_file_id, s.from_band))
    preview.bands = [BandPreview(b.id, b.label, b.title, **counts[b.id]) for b in bands]
    return preview


def refresh_preview(
    source: Database | Engine,
    target_id: int,
    cancel: CancelFlag | None = None,
    *,
    stale: bool = True,
) -> RefreshPreview:
    """The window's call: the preview on a connection of its own; ``cancel`` stops the
    statement on the server (the dialog was closed)."""
    engine = source.engine if isinstance(source, Database) else source
    cancel = cancel or CancelFlag()
    with engine.connect() as conn:
        try:
            with interrupt_on(cancel, [conn]):
                return preview_refresh(conn, target_id, stale=stale)
        except DBAPIError as exc:
            if cancel.is_set():
                raise PreviewCancelled(f"target {target_id}: preview cancelled") from None
            raise PreviewFailed(
                f"target {target_id}: the preview failed: {server_reason(exc)}"
            ) from None
