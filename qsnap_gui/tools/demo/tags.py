"""The catalogue's traits and the bulk rows: me_files, and their tags in the demo's own mix.

The bulk is made in PostgreSQL over generate_series and the seeded hash, without indexes.
"""

from __future__ import annotations

import random

from sqlalchemy import Connection, insert, text

from qsnap_gui.store.tables import MeFileTag, Trait
from qsnap_gui.tools.demo.catalogue import (
    BASE_TIME,
    CATALOGUE,
    FIRST_NAMES,
    INPUT_TYPES,
    LAST_NAMES,
)
from qsnap_gui.tools.demo.spec import DemoSpec, Parent, audit, h


def insert_traits(conn: Connection, rng: random.Random, spec: DemoSpec) -> list[Parent]:
    rows: list[dict[str, object]] = []
    parents: list[Parent] = []
    next_id = 1
    for name, order, kind, children in CATALOGUE:
        parent_id = next_id
        next_id += 1
        rows.append(
            {
                "id": parent_id,
                "trait_name": name,
                "display_order": order,
                "parent_trait_id": None,
                "is_active": True,
                "input_type": INPUT_TYPES[kind],
                **audit(BASE_TIME),
            }
        )
        if kind == "zip":
            zips = sorted(rng.sample(range(1001, 99951), spec.zips))
            values = [f"{z:05d}" for z in zips]
            orders = zips
        else:
            values = children
            orders = [i + 1 for i in range(len(children))]
            if len(children) > 3:
                tie = rng.randrange(1, len(children))
                orders[tie] = orders[tie - 1]
        ids = []
        for value, child_order in zip(values, orders, strict=True):
            rows.append(
                {
                    "id": next_id,
                    "trait_name": value,
                    "display_order": child_order,
                    "parent_trait_id": parent_id,
                    "is_active": True,
                    "input_type": INPUT_TYPES[kind],
                    **audit(BASE_TIME),
                }
            )
            ids.append(next_id)
            next_id += 1
        parents.append(Parent(parent_id, name, kind, tuple(ids), tuple(values)))
    orphan_parent = next_id + 1000
    rows.append(
        {
            "id": next_id,
            "trait_name": "Orphaned answer",
            "display_order": 1,
            "parent_trait_id": orphan_parent,
            "is_active": False,
            "input_type": INPUT_TYPES["single"],
            **audit(BASE_TIME),
        }
    )
    conn.execute(insert(Trait), rows)
    conn.execute(text("select setval(pg_get_serial_sequence('traits', 'id'), :v)"), {"v": next_id})
    return parents


def insert_me_files(conn: Connection, spec: DemoSpec) -> None:
    conn.execute(
        text(
            f"""
            insert into me_files (id, display_name, created_at, updated_at)
            select m.id,
                   (cast(:first as text[]))[1 + {h(spec.seed, 1)} % :nf] || ' ' ||
                   (cast(:last as text[]))[1 + {h(spec.seed, 2)} % :nl],
                   :base + make_interval(secs => {h(spec.seed, 3)} % 31536000),
                   :base + make_interval(secs => {h(spec.seed, 3)} % 31536000)
            from generate_series(1, :n) as m(id)
            """
        ),
        {
            "first": FIRST_NAMES,
            "last": LAST_NAMES,
            "nf": len(FIRST_NAMES),
            "nl": len(LAST_NAMES),
            "n": spec.me_files,
            "base": BASE_TIME,
        },
    )
    conn.execute(
        text("select setval(pg_get_serial_sequence('me_files', 'id'), :v)"), {"v": spec.me_files}
    )


def insert_tags(conn: Connection, spec: DemoSpec, parents: list[Parent]) -> int:
    """Single answers (most parents), one zip each, and 0-3 picks of each multi-select parent.

    Children sit one per row in a temp table joined by (parent, index): subscripting a
    3,000-element array per generated row would detoast it every time.
    """
    conn.execute(
        text(
            "create temp table demo_parents (pid int primary key, kind text, ord int, salt int, "
            "n int, pct int) on commit drop"
        )
    )
    conn.execute(
        text(
            "create temp table demo_children (pid int, idx int, trait_id int, val text, "
            "primary key (pid, idx)) on commit drop"
        )
    )
    conn.execute(
        text("insert into demo_parents values (:pid, :kind, :ord, :salt, :n, :pct)"),
        [
            {
                "pid": p.id,
                "kind": p.kind,
                "ord": i,
                "salt": 100 + i,
                "n": len(p.children),
                "pct": 40 + (i * 37) % 40,
            }
            for i, p in enumerate(parents)
        ],
    )
    conn.execute(
        text("insert into demo_children values (:pid, :idx, :tid, :val)"),
        [
            {"pid": p.id, "idx": i, "tid": tid, "val": val}
            for p in parents
            for i, (tid, val) in enumerate(zip(p.children, p.values, strict=True))
        ],
    )
    conn.execute(text("analyze demo_parents"))
    conn.execute(text("analyze demo_children"))
    drop_tag_indexes(conn)
    seed = spec.seed
    # ids are (me_file, parent, pick) packed into one number: unique without a sequence
    tag_id = "x.mid * 256 + x.ord * 4"
    singles = conn.execute(
        text(
            f"""
            insert into me_file_tags (id, me_file_id, trait_id, tag_value, added_date,
                                      modified_date, added_by, modified_by)
            select {tag_id}, x.mid, c.trait_id,
                   case when x.kind = 'zip' and x.blank = 0 then null
                        when x.kind = 'zip' and x.blank = 1 then ''
                        else c.val end,
                   :base, :base, 1, 1
            from (
                select m.id as mid, dp.pid, dp.kind, dp.ord,
                       {h(seed, 0, "m.id * 97 + dp.salt")} % dp.n as idx,
                       {h(seed, 5)} % 400 as blank
                from generate_series(1, :n) as m(id)
                cross join demo_parents dp
                where dp.kind = 'zip'
                   or (dp.kind = 'single' and {h(seed, 0, "m.id * 31 + dp.salt")} % 100 < dp.pct)
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
            select {tag_id} + x.k, x.mid, c.trait_id, c.val, :base, :base, 1, 1
            from (
                select s.mid, s.pid, s.ord, j.k, (s.start + j.k) % s.n as idx
                from (select m.id as mid, dp.pid, dp.ord, dp.n,
                             {h(seed, 0, "m.id * 53 + dp.salt")} % dp.n as start,
                             least({h(seed, 0, "m.id * 71 + dp.salt")} % 4, dp.n) as picks
                      from generate_series(1, :n) as m(id)
                      cross join demo_parents dp
                      where dp.kind = 'multi') s
                join (values (0), (1), (2)) as j(k) on j.k < s.picks
            ) x
            join demo_children c on c.pid = x.pid and c.idx = x.idx
            """
        ),
        {"n": spec.me_files, "base": BASE_TIME},
    )
    conn.execute(
        text("select setval(pg_get_serial_sequence('me_file_tags', 'id'), :v)"),
        {"v": (spec.me_files + 1) * 256},
    )
    return singles.rowcount + multis.rowcount


def drop_tag_indexes(conn: Connection) -> None:
    """Bulk load without indexes (built afterwards, see generate._index_in_parallel):
    maintaining the primary key and two indexes row by row, and drawing each id from the
    sequence, cost more than the rows."""
    conn.execute(text("alter table me_file_tags drop constraint me_file_tags_pkey"))
    for index in MeFileTag.__table__.indexes:
        index.drop(conn)
