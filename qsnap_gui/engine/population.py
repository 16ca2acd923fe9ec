"""Refresh Population (DOMAIN.md): membership in SQL, the diff in one transaction, then the
snapshot stage, and the status flip only once every band job has ended."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from qsnap_gui.domain.errors import RefreshInterrupted, TargetBusy, TargetLockLost, UsageError
from qsnap_gui.domain.jobs import BandResult, CancelFlag, Cancelled, JobState
from qsnap_gui.domain.words import plural
from qsnap_gui.engine.oban import application_refresh
from qsnap_gui.engine.snapshots import describe_failure
from qsnap_gui.store import locks
from qsnap_gui.store.db import server_reason
from qsnap_gui.store.interrupt import interrupt_on
from qsnap_gui.store.queries import band_order, refresh_order, require_target

log = logging.getLogger(__name__)

NOW_SQL = "date_trunc('second', clock_timestamp() at time zone 'UTC')"


@dataclass(frozen=True)
class DiffCounts:
    kept: int
    inserted: int
    deleted: int
    moved: int

    @property
    def total(self) -> int:
        return self.kept + self.inserted


@dataclass
class RefreshResult:
    target_id: int
    diff: DiffCounts | None
    bands: list[BandResult] = field(default_factory=list)
    status: str = "populated"

    @property
    def failed(self) -> list[BandResult]:
        return [b for b in self.bands if b.state is not JobState.SUCCEEDED]


def outermost_first(conn: Connection, target_id: int) -> list[int]:
    """Refresh Population's band order: fewest groups first, then lower id first."""
    return [b.id for b in refresh_order(band_order(conn, target_id))]


MEMBERSHIP_SQL = """
    with bands as (
        select band_id, idx from unnest(cast(:band_ids as bigint[])) with ordinality as u(band_id, idx)
    ),
    links as (
        select distinct bg.target_band_id as band_id, g.id as trait_group_id
        from target_band_trait_groups bg join trait_groups g on g.id = bg.trait_group_id
        where bg.target_band_id = any(cast(:band_ids as bigint[]))
    ),
    wanted as (
        select b.band_id, b.idx - 1 as idx, count(l.trait_group_id) as ngroups
        from bands b left join links l on l.band_id = b.band_id
        group by b.band_id, b.idx
    ),
    groups_met as (
        select distinct mt.me_file_id, gt.trait_group_id
        from qsnap_member_traits gt join me_file_tags mt on mt.trait_id = gt.trait_id
    ),
    hits as (
        select g.me_file_id, bg.band_id, count(*) as n
        from groups_met g
        join links bg on bg.trait_group_id = g.trait_group_id
        group by g.me_file_id, bg.band_id
    ),
    sat as (
        select h.me_file_id, w.idx
        from hits h join wanted w on w.band_id = h.band_id and h.n = w.ngroups and w.ngroups > 0
        union all
        select t.me_file_id, w.idx
        from wanted w cross join (select distinct me_file_id from me_file_tags) t
        where w.ngroups = 0
    ),
    levels as (
        select me_file_id,
               bit_count(cast(((~mask) & (mask + 1)) - 1 as bit(64))) as level
        from (select me_file_id, bit_or(cast(1 as bigint) << cast(idx as int)) as mask
              from sat group by me_file_id) m
    )
    select l.me_file_id, w.band_id
    from levels l
    join wanted w on w.idx = l.level - 1
"""


# one bit per trait group of the target (bits 0-61 of a bigint); more take MEMBERSHIP_SQL
MASK_BITS = 62

MASKS_SQL = """
    select mt.me_file_id, bit_or(gt.bits) as mask
    from qsnap_member_traits gt
    cross join lateral (
        select t.me_file_id from me_file_tags t where t.trait_id = gt.trait_id offset 0
    ) mt
    group by mt.me_file_id
"""

# a band without groups takes every me_file with a tag, also those without any group's tags
EVERY_TAGGED_SQL = f"""
    select me_file_id, bit_or(mask) as mask from (
        {MASKS_SQL}
        union all select distinct me_file_id, cast(0 as bigint) from me_file_tags
    ) u group by me_file_id
"""

LEVELS_SQL = """
    select l.me_file_id, (cast(:band_ids as bigint[]))[l.level] as band_id
    from (select m.me_file_id, {level} as level from qsnap_member_masks m) l
    where l.level > 0
"""


def _band_masks(conn: Connection, band_ids: list[int]) -> tuple[dict[int, int], list[int]]:
    """Each group's bit, and each band's mask of the groups it requires (outermost first)."""
    pairs = conn.execute(
        text(
            "select distinct bg.target_band_id, g.id from target_band_trait_groups bg "
            "join trait_groups g on g.id = bg.trait_group_id "
            "where bg.target_band_id = any(cast(:band_ids as bigint[]))"
        ),
        {"band_ids": band_ids},
    ).all()
    bits = {group: n for n, group in enumerate(sorted({group for _, group in pairs}))}
    masks = {band: 0 for band in band_ids}
    for band, group in pairs:
        masks[band] |= 1 << bits[group]
    return bits, [masks[band] for band in band_ids]


def _levels_sql(masks: list[int]) -> str:
    """A me_file's level: how many bands in a row, outermost first, its groups satisfy."""
    cases = " ".join(
        f"when m.mask & (cast(:masks as bigint[]))[{n}] <> (cast(:masks as bigint[]))[{n}] "
        f"then {n - 1}"
        for n in range(1, len(masks) + 1)
    )
    return LEVELS_SQL.format(level=f"case {cases} else {len(masks)} end")


@dataclass(frozen=True)
class MembershipSql:
    """The membership as SQL: ``steps`` (name, SELECT) each reading the steps before it by
    name, then ``final`` yielding (me_file_id, band_id); ``params`` bind them all.

    The refresh makes each step an analysed temp table; a read-only preview runs the same
    statements as materialised CTEs of those names (a read-only transaction cannot create
    tables), so both compute one membership.
    """

    steps: tuple[tuple[str, str], ...]
    final: str
    params: dict

    def as_ctes(self, name: str = "qsnap_membership") -> str:
        """``name as materialized (...)`` preceded by its steps, for a WITH clause."""
        parts = [*self.steps, (name, self.final)]
        return ",\n".join(f"{n} as materialized ({sql})" for n, sql in parts)


def membership_sql(conn: Connection, band_ids_outermost_first: list[int]) -> MembershipSql:
    """The target's membership as SQL (reads only the bands' groups to build it).

    Each group a me_file has a tag in sets one bit of its mask, read in one pass over the
    groups' tags through the trait_id index; a band takes the me_files whose masks cover its
    groups. For a million me_files: 17 s -> 8 s, where counting hits per band and group
    sorted five million rows (that query remains for targets of more than 62 groups).
    """
    band_ids = band_ids_outermost_first
    if not band_ids:
        return MembershipSql(
            (),
            "select cast(null as bigint) as me_file_id, cast(null as bigint) as band_id "
            "where false",
            {},
        )
    bits, masks = _band_masks(conn, band_ids)
    if len(bits) <= MASK_BITS:
        traits = (
            "select gt.trait_id, bit_or(cast(1 as bigint) << g.bit) as bits "
            "from trait_group_traits gt "
            "join unnest(cast(:groups as bigint[]), cast(:bits as int[])) as g(id, bit) "
            "on g.id = gt.trait_group_id group by gt.trait_id"
        )
        every_tagged = masks[0] == 0
        steps = (
            ("qsnap_member_traits", traits),
            ("qsnap_member_masks", EVERY_TAGGED_SQL if every_tagged else MASKS_SQL),
        )
        params = {
            "groups": list(bits),
            "bits": list(bits.values()),
            "band_ids": band_ids,
            "masks": masks,
        }
        return MembershipSql(steps, _levels_sql(masks), params)
    traits = (
        "select distinct gt.trait_group_id, gt.trait_id from trait_group_traits gt "
        "where gt.trait_group_id = any(cast(:groups as bigint[]))"
    )
    return MembershipSql(
        (("qsnap_member_traits", traits),),
        MEMBERSHIP_SQL,
        {"groups": list(bits), "band_ids": band_ids},
    )


def compute_membership(conn: Connection, band_ids_outermost_first: list[int]) -> None:
    """Fill the temporary table qsnap_membership(me_file_id, band_id) for the target."""
    conn.execute(
        text("drop table if exists qsnap_membership, qsnap_member_traits, qsnap_member_masks")
    )
    conn.execute(text("set local work_mem = '256MB'"))
    member = membership_sql(conn, band_ids_outermost_first)
    # the groups' traits, and then the masks, in tables of their own, analysed: estimated
    # inline, the joins came out 70 times too big and the planner chose nested loops
    for name, sql in member.steps:
        conn.execute(text(f"create temp table {name} as {sql}"), member.params)
        conn.execute(text(f"analyze {name}"))
    conn.execute(text(f"create temp table qsnap_membership as {member.final}"), member.params)
    conn.execute(text("analyze qsnap_membership"))


DIFF_SQL = f"""
    with gone as (
        delete from target_populations tp
        where tp.target_band_id = any(cast(:band_ids as bigint[]))
          and tp.me_file_id is not null
          and not exists (select 1 from qsnap_membership m
                          where m.me_file_id = tp.me_file_id and m.band_id = tp.target_band_id)
        returning tp.me_file_id
    ), added as (
        insert into target_populations
            (target_band_id, me_file_id, matching_tags_snapshot, created_at, updated_at)
        select m.band_id, m.me_file_id, null, {NOW_SQL}, {NOW_SQL}
        from qsnap_membership m
        where not exists (select 1 from target_populations tp
                          where tp.target_band_id = m.band_id and tp.me_file_id = m.me_file_id)
        on conflict do nothing
        returning me_file_id
    )
    select (select count(*) from qsnap_membership),
           (select count(*) from added),
           (select count(*) from gone),
           (select count(*) from (select me_file_id from gone
                                  intersect select me_file_id from added) x)
"""


def lock_bands(conn: Connection, band_ids: list[int]) -> None:
    """Hold the bands' job locks until the caller's transaction ends, waiting for running jobs.

    A band job locks rows batch by batch in id order, a bulk DELETE in its own order: run
    together on one band they can deadlock, so bulk writes wait for the band jobs instead.
    """
    for band_id in sorted(band_ids):
        locks.xact_lock(conn, locks.BAND, band_id)


def apply_membership(conn: Connection, target_id: int) -> DiffCounts:
    """Compute the target's membership and apply the diff, in the caller's transaction."""
    band_ids = outermost_first(conn, target_id)
    lock_bands(conn, band_ids)
    compute_membership(conn, band_ids)
    # the statistics of target_populations may say "empty" (just depopulated, or never
    # analysed): planned as a nested loop, the insert then rescanned the rows it was adding
    # for every new member, quadratic (a million new rows ran for more than ten minutes)
    conn.execute(text("set local enable_nestloop = off"))
    total, inserted, deleted, moved = conn.execute(text(DIFF_SQL), {"band_ids": band_ids}).one()
    conn.execute(text("set local enable_nestloop to default"))
    conn.execute(
        text("drop table if exists qsnap_membership, qsnap_member_traits, qsnap_member_masks")
    )
    return DiffCounts(kept=total - inserted, inserted=inserted, deleted=deleted, moved=moved)


def set_status(conn: Connection, target_id: int, status: str, *, stamp: bool = False) -> None:
    extra = f", last_populated_at = {NOW_SQL}" if stamp else ""
    if status == "not_populated":
        extra = ", last_populated_at = null"
    conn.execute(
        text(
            f"update targets set population_status = :s, updated_at = {NOW_SQL}{extra} "
            "where id = :t"
        ),
        {"s": status, "t": target_id},
    )


class TargetLock:
    """Session-level advisory lock on a target, held on its own connection for the whole flow."""

    def __init__(self, engine: Engine, target_id: int, title: str) -> None:
        self.engine = engine
        self.target_id = target_id
        self.title = title
        self.conn: Connection | None = None

    def __enter__(self) -> TargetLock:
        self.conn = self.engine.connect()
        if not locks.try_lock(self.conn, locks.TARGET, self.target_id):
            self.conn.rollback()
            self.conn.close()
            raise TargetBusy(
                f"target {self.target_id} ({self.title}) is being refreshed by another "
                "qsnap session; try again when it has finished"
            )
        self.conn.commit()
        return self

    def ensure_held(self) -> None:
        """Fail clearly when the lock's session has ended (terminated by an admin, a timeout).

        Another qsnap would then see the target as free and could refresh it at the same time.
        """
        assert self.conn is not None
        try:
            held = locks.held_by_me(self.conn, locks.TARGET, self.target_id)
            self.conn.commit()
        except DBAPIError as exc:
            self.conn.invalidate()
            raise TargetLockLost(
                f"target {self.target_id}: the session holding its refresh lock has ended "
                f"({server_reason(exc)}); the target is left populating: run "
                f"`qsnap populate {self.target_id} --resume`"
            ) from None
        if not held:
            raise TargetLockLost(
                f"target {self.target_id}: its refresh lock is no longer held; the target is "
                f"left populating: run `qsnap populate {self.target_id} --resume`"
            )

    def __exit__(self, *exc) -> None:
        assert self.conn is not None
        if not self.conn.invalidated:
            try:
                self.conn.rollback()
                locks.unlock(self.conn, locks.TARGET, self.target_id)
                self.conn.commit()
            except Exception:
                self.conn.invalidate()
        self.conn.close()


StageFn = Callable[[str], None]


def refuse_if_application_refreshing(engine: Engine, target_id: int) -> None:
    """The application's own PopulateTargetWorker job for the target means it is busy there:
    a local refresh beside it would set "populated" while the application works. Where
    oban_jobs cannot be read, qsnap cannot rule that out and refuses too, saying why."""
    with engine.connect() as conn:
        app = application_refresh(conn, target_id)
    if app.blocks:
        raise TargetBusy(app.refusal(target_id))


def _set_status_durably(
    engine: Engine, target_id: int, status: str, *, stamp: bool = False
) -> None:
    """A status flip is committed synchronously: once reported, a server crash cannot undo it.

    A synchronous commit also flushes every earlier (asynchronous) batch commit of the jobs.
    """
    with engine.begin() as conn:
        conn.execute(text("set local synchronous_commit = on"))
        set_status(conn, target_id, status, stamp=stamp)


class RefreshFlow:
    """Refresh Population in steps, so that band jobs run on the runner's threads between them.

    ``start`` takes the target lock, marks the target populating and applies the membership
    diff (DOMAIN.md steps 1-3); the runner then snapshots ``band_ids`` (step 4); ``finish``
    marks it populated whatever the band jobs did (step 5), or, for a refresh the operator
    cancelled, leaves it populating, and releases the lock. ``resume`` (a target stuck in
    populating) runs the same steps: the diff of a membership that is already current changes
    nothing, and qsnap cannot know whether an interrupted refresh got past its diff.
    """

    def __init__(
        self,
        engine: Engine,
        target_id: int,
        *,
        resume: bool = False,
        say: StageFn | None = None,
        cancel: CancelFlag | None = None,
    ) -> None:
        self.engine = engine
        self.target_id = target_id
        self.resume = resume
        self.say = say or log.info
        self.cancel = cancel or CancelFlag()
        self.band_ids: list[int] = []
        self.title = ""
        self.diff: DiffCounts | None = None
        self.status_after: str | None = None
        self._lock: TargetLock | None = None

    def start(self) -> DiffCounts | None:
        with self.engine.connect() as conn:
            title = require_target(conn, self.target_id)
            self.title = title if title is not None else f"(untitled #{self.target_id})"
            self.band_ids = outermost_first(conn, self.target_id)
            status, timeout = conn.execute(
                text(
                    "select population_status, current_setting('statement_timeout') "
                    "from targets where id = :t"
                ),
                {"t": self.target_id},
            ).one()
        status = status or "not_populated"
        self.status_after = status
        if self.resume and status != "populating":
            raise UsageError(
                f"target {self.target_id} is {status}, not stuck in populating: nothing to resume"
            )
        self._lock = TargetLock(self.engine, self.target_id, self.title).__enter__()
        try:
            refuse_if_application_refreshing(self.engine, self.target_id)
            if not self.band_ids:
                return None
            verb = "resuming" if self.resume else "computing membership of"
            _set_status_durably(self.engine, self.target_id, "populating")
            self.status_after = "populating"
            self.say(
                f"target {self.target_id} ({self.title}): {verb} {plural(len(self.band_ids), 'band')}"
            )
            self.diff = self._apply_membership(status, timeout)
            d = self.diff
            self.say(
                f"membership: {d.kept} kept, {d.inserted} inserted, {d.deleted} deleted, "
                f"{d.moved} moved"
            )
            return self.diff
        except BaseException:
            self.release()
            raise

    def _apply_membership(self, previous: str, timeout: str) -> DiffCounts:
        """Step 2-3 in one transaction. Once its COMMIT is sent, an error leaves the target
        populating (the diff may have been applied); before that, the old status comes back."""
        assert self._lock is not None
        self._lock.ensure_held()
        commit_sent = False
        try:
            with self.engine.connect() as conn, interrupt_on(self.cancel, [conn]):
                trans = conn.begin()
                diff = apply_membership(conn, self.target_id)
                if self.cancel.is_set():
                    raise Cancelled
                commit_sent = True
                trans.commit()
            return diff
        except (DBAPIError, Cancelled) as exc:
            if self.cancel.is_set() and not commit_sent:
                if not self.resume:
                    _set_status_durably(self.engine, self.target_id, previous)
                    self.status_after = previous
                raise Cancelled from None
            reason = describe_failure(exc, timeout, "computing the membership")
            if commit_sent or self.resume:
                raise RefreshInterrupted(
                    f"target {self.target_id}: {reason} while committing the membership; the "
                    "refresh may have been applied: the target is left populating, run "
                    f"`qsnap populate {self.target_id} --resume`"
                ) from exc
            try:
                _set_status_durably(self.engine, self.target_id, previous)
                self.status_after = previous
            except DBAPIError as again:
                raise RefreshInterrupted(
                    f"target {self.target_id}: {reason}; restoring its status failed too "
                    f"({server_reason(again)}): the target is left populating, run "
                    f"`qsnap populate {self.target_id} --resume`"
                ) from exc
            raise RefreshInterrupted(
                f"target {self.target_id}: {reason}; nothing was changed (status back to "
                f"{previous})"
            ) from exc

    def band_labels(self) -> dict[int, str]:
        """Bullseye / Ring N per band id; empty when that read fails (the job goes on)."""
        try:
            with self.engine.connect() as conn:
                return {b.id: b.label for b in band_order(conn, self.target_id)}
        except DBAPIError:
            return {}

    def finish(self, *, cancelled: bool = False) -> str:
        """Step 5 once every band job has ended; returns the target's status now.

        A refresh the operator cancelled leaves the target populating (shown as stuck and
        resumable); a failed band job does not hold the flip back.
        """
        try:
            if cancelled and self.band_ids:
                self.say(
                    f"target {self.target_id}: refresh cancelled; left populating, run "
                    f"`qsnap populate {self.target_id} --resume` to finish it"
                )
                self.status_after = "populating"
                return "populating"
            status = "populated" if self.band_ids else "not_populated"
            if self._lock is not None:
                self._lock.ensure_held()
            _set_status_durably(self.engine, self.target_id, status, stamp=bool(self.band_ids))
            self.status_after = status
            if self.band_ids:
                self.say(f"target {self.target_id} populated")
            else:
                self.say(f"target {self.target_id} has no bands: nothing to populate")
            return status
        finally:
            self.release()

    def release(self) -> None:
        if self._lock is not None:
            self._lock.__exit__(None, None, None)
            self._lock = None


def depopulate(engine: Engine, target_id: int) -> int:
    """Delete the target's populations and mark it not populated; returns rows deleted."""
    with engine.connect() as conn:
        title = require_target(conn, target_id)
    with TargetLock(engine, target_id, title), engine.begin() as conn:
        lock_bands(conn, outermost_first(conn, target_id))
        deleted = conn.execute(
            text(
                "delete from target_populations where target_band_id in "
                "(select id from target_bands where target_id = :t)"
            ),
            {"t": target_id},
        ).rowcount
        set_status(conn, target_id, "not_populated")
    return deleted
