"""Tags drawn to a chosen mean per me_file (benchmark worlds), and the equal-bands world."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import Connection, text

from qsnap_gui.domain.errors import UsageError
from qsnap_gui.tools.demo.catalogue import BASE_TIME, CATALOGUE, EQUAL_FILLERS, EQUAL_SEGMENT
from qsnap_gui.tools.demo.spec import DemoSpec, Parent, h
from qsnap_gui.tools.demo.tags import drop_tag_indexes

# tag ids are me_file id * TAG_SLOTS + the child's slot (every zip shares slot 0)
TAG_SLOTS = 256


@dataclass(frozen=True)
class _Draw:
    """How many tags of one parent a me_file gets. A single answer: one, with ``chance`` in
    10,000. A multi select: ``low + floor(u * spread)`` picks (u uniform in [0, 1)), or
    ``n - floor(u * spread)`` when ``mirrored``, of consecutive children."""

    parent: Parent
    chance: int = 0
    low: int = 0
    spread: float = 1.0
    mirrored: bool = False

    def mean(self) -> float:
        if self.parent.kind != "multi":
            return self.chance / 10_000
        # E[floor(u * A)] = sum over k of P(u * A >= k)
        a = self.spread
        floor_mean = sum(1 - k / a for k in range(1, math.ceil(a)))
        return len(self.parent.children) - floor_mean if self.mirrored else self.low + floor_mean


def _multi_draw(parent: Parent, low: int, mean: float) -> _Draw:
    n = len(parent.children)
    mean = min(max(mean, low), n)
    if mean - low <= (n - low) / 2:
        return _Draw(parent, low=low, spread=2 * (mean - low) + 1)
    return _Draw(parent, low=low, spread=2 * (n - mean) + 1, mirrored=True)


def tag_draws(spec: DemoSpec, parents: list[Parent]) -> list[_Draw]:
    """Draws whose mean is ``spec.tags_per_me_file`` tags per me_file (40 when unset), in the
    demo's mix: one zip each, single answers as often as the demo has them and 1.5 picks of
    each multi select, all scaled alike (found by bisection over that scale)."""
    wanted = spec.tags_per_me_file or 40
    equal = spec.bands == "equal"

    def draws(scale: float) -> list[_Draw]:
        out = []
        for i, p in enumerate(parents):
            if p.kind == "zip" or (equal and p.name == EQUAL_SEGMENT):
                out.append(_Draw(p, chance=10_000))
            elif p.kind == "single":
                out.append(_Draw(p, chance=min(10_000, round((40 + (i * 37) % 40) * 100 * scale))))
            else:
                out.append(_multi_draw(p, int(equal and p.name in EQUAL_FILLERS), 1.5 * scale))
        return out

    def mean(scale: float) -> float:
        return sum(d.mean() for d in draws(scale))

    check_tags_per_me_file(wanted, spec.bands)
    lo, hi = 0.0, 1e6
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mean(mid) < wanted else (lo, mid)
    return draws(hi)


def check_tags_per_me_file(wanted: int, bands: str) -> None:
    """Refuse a mean no me_file of the catalogue can have: at least a zip (and, for equal
    bands, a segment answer and one tag of each filler parent), at most every answer."""
    singles = sum(1 for _, _, kind, _ in CATALOGUE if kind != "multi")
    answers = sum(len(children) for _, _, kind, children in CATALOGUE if kind == "multi")
    low = 1 + (1 + len(EQUAL_FILLERS) if bands == "equal" else 0)
    if not low <= wanted <= singles + answers:
        raise UsageError(
            f"--tags-per-me-file must be between {low} and {singles + answers} "
            f"({bands} bands): the demo catalogue has {singles} single answers and "
            f"{answers} multi-select answers"
        )


def insert_drawn_tags(conn: Connection, spec: DemoSpec, parents: list[Parent]) -> int:
    """Tags drawn per ``tag_draws``, set-based: one statement for single answers and zips, one
    for multi selects (a generated series of picks per me_file and parent)."""
    draws = tag_draws(spec, parents)
    conn.execute(
        text(
            "create temp table demo_draws (pid int primary key, kind text, salt int, n int, "
            "chance int, low int, spread float8, mirrored bool) on commit drop"
        )
    )
    conn.execute(
        text(
            "create temp table demo_children (pid int, idx int, trait_id int, val text, "
            "slot int, primary key (pid, idx)) on commit drop"
        )
    )
    conn.execute(
        text(
            "insert into demo_draws values (:pid, :kind, :salt, :n, :chance, :low, :spread, "
            ":mirrored)"
        ),
        [
            {
                "pid": d.parent.id,
                "kind": d.parent.kind,
                "salt": 100 + i,
                "n": len(d.parent.children),
                "chance": d.chance,
                "low": d.low,
                "spread": d.spread,
                "mirrored": d.mirrored,
            }
            for i, d in enumerate(draws)
        ],
    )
    children = []
    slot = 0
    for p in parents:
        for i, (tid, val) in enumerate(zip(p.children, p.values, strict=True)):
            if p.kind != "zip":
                slot += 1
            children.append(
                {"pid": p.id, "idx": i, "tid": tid, "val": val, "slot": slot * (p.kind != "zip")}
            )
    if slot >= TAG_SLOTS:
        raise ValueError(f"{slot} child traits do not fit in {TAG_SLOTS} tag id slots")
    conn.execute(text("insert into demo_children values (:pid, :idx, :tid, :val, :slot)"), children)
    conn.execute(text("analyze demo_draws, demo_children"))
    drop_tag_indexes(conn)
    seed = spec.seed
    u = f"({h(seed, 0, 'm.id * 71 + d.salt')} / 2147483648.0)"
    singles = conn.execute(
        text(
            f"""
            insert into me_file_tags (id, me_file_id, trait_id, tag_value, added_date,
                                      modified_date, added_by, modified_by)
            select x.mid * {TAG_SLOTS} + c.slot, x.mid, c.trait_id,
                   case when x.kind = 'zip' and x.blank = 0 then null
                        when x.kind = 'zip' and x.blank = 1 then ''
                        else c.val end,
                   :base, :base, 1, 1
            from (
                select m.id as mid, d.pid, d.kind,
                       {h(seed, 0, "m.id * 97 + d.salt")} % d.n as idx,
                       {h(seed, 5)} % 400 as blank
                from generate_series(1, :n) as m(id)
                cross join demo_draws d
                where d.kind <> 'multi' and {h(seed, 0, "m.id * 31 + d.salt")} % 10000 < d.chance
            ) x
            join demo_children c on c.pid = x.pid and c.idx = x.idx
            """
        ),
        {"n": spec.me_files, "base": BASE_TIME},
    )
    multis = conn.execute(
        text(
            f"""
            insert into me_file_tags (id, me_file_id, trait_id, tag_value, added_date,
                                      modified_date, added_by, modified_by)
            select s.mid * {TAG_SLOTS} + c.slot, s.mid, c.trait_id, c.val, :base, :base, 1, 1
            from (
                select m.id as mid, d.pid, d.n,
                       {h(seed, 0, "m.id * 53 + d.salt")} % d.n as start,
                       case when d.mirrored then d.n - floor({u} * d.spread)
                            else d.low + floor({u} * d.spread) end as picks
                from generate_series(1, :n) as m(id)
                cross join demo_draws d
                where d.kind = 'multi'
            ) s
            cross join lateral generate_series(0, cast(s.picks as int) - 1) as k(k)
            join demo_children c on c.pid = s.pid and c.idx = (s.start + k.k) % s.n
            """
        ),
        {"n": spec.me_files, "base": BASE_TIME},
    )
    conn.execute(
        text("select setval(pg_get_serial_sequence('me_file_tags', 'id'), :v)"),
        {"v": (spec.me_files + 1) * TAG_SLOTS},
    )
    return singles.rowcount + multis.rowcount
