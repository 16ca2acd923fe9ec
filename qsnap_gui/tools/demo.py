"""The demo data set: deterministic for a seed, shaped like a real Qlarius database.

Catalogue rows (traits, groups, targets, bands) are made in Python from ``random.Random(seed)``;
the bulk (me_files, tags, populations, snapshots) is made in PostgreSQL with INSERT … SELECT
over generate_series and a seeded hash, so a million me_files never pass through Python.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, Table, insert, text
from sqlalchemy.schema import CreateIndex

from qsnap_gui.domain.errors import UsageError
from qsnap_gui.engine.population import compute_membership, outermost_first
from qsnap_gui.engine.snapshot_sql import (
    BAND_TRAITS_SQL,
    LOOKUP_SHARE,
    STAGING_WORK_MEM,
    snapshot_select_sql,
    tune_band_compute,
)
from qsnap_gui.store.db import DEMO_COMPLETE, is_complete_demo, is_qsnap_demo, make_engine
from qsnap_gui.store.dsn import normalize_url
from qsnap_gui.store.embedded import DEMO_DATABASE, create_database
from qsnap_gui.store.schema import create_demo_schema, has_qlarius_tables
from qsnap_gui.store.tables import (
    AdEvent,
    MeFile,
    MeFileTag,
    Offer,
    Target,
    TargetBand,
    TargetBandTraitGroup,
    TargetPopulation,
    Trait,
    TraitGroup,
    TraitGroupTrait,
)

log = logging.getLogger(__name__)

# tables bulk-loaded without their indexes
BULK_TABLES = (TargetPopulation.__table__, Offer.__table__, AdEvent.__table__)

BASE_TIME = datetime(2025, 3, 1, 9, 0, 0)

# (parent name, display order, kind, children); kind: single answer, multi select or zip.
INPUT_TYPES = {"single": "single_select", "multi": "multi_select", "zip": "single_select_zip"}
CATALOGUE: list[tuple[str, int, str, list[str]]] = [
    ("Home Own/Rent", 1, "single", ["Own", "Rent", "Live with family"]),
    ("Home Zip Code", 1, "zip", []),
    (
        "Home Properties",
        2,
        "multi",
        [
            "Multi-story",
            "Central Heat/AC",
            "Fireplace - Gas",
            "Fireplace - Wood",
            "Pool",
            "Basement",
            "Garage",
            "Solar Panels",
            "Deck/Patio",
            "Finished Attic",
        ],
    ),
    (
        "Home Type",
        2,
        "single",
        ["Single Family", "Condo", "Duplex", "Townhouse", "Apartment", "Mobile Home"],
    ),
    (
        "Home Fashion/Styles",
        1011,
        "multi",
        [
            "Casual",
            "Contemporary",
            "Traditional",
            "Rustic",
            "Minimalist",
            "Bohemian",
            "English Country",
            "Mid-Century",
            "Industrial",
            "Coastal",
            "Farmhouse",
        ],
    ),
    ("Gender", 3, "single", ["Male", "Female", "Non-binary"]),
    ("Age Range", 3, "single", ["18-24", "25-34", "35-44", "45-54", "55-64", "65+"]),
    (
        "Household Income",
        4,
        "single",
        ["Under $25k", "$25k-$50k", "$50k-$75k", "$75k-$100k", "$100k-$150k", "$150k+"],
    ),
    (
        "Education",
        5,
        "single",
        ["High School", "Some College", "Bachelor's", "Master's", "Doctorate"],
    ),
    ("Marital Status", 5, "single", ["Single", "Married", "Divorced", "Widowed"]),
    ("Children in Household", 6, "single", ["None", "1", "2", "3", "4+"]),
    ("Pets", 7, "multi", ["Dog", "Cat", "Fish", "Bird", "Reptile", "Horse"]),
    ("Vehicle Type", 8, "single", ["Sedan", "SUV", "Truck", "Minivan", "EV", "No vehicle"]),
    (
        "Employment Status",
        9,
        "single",
        ["Full-time", "Part-time", "Self-employed", "Retired", "Student"],
    ),
    (
        "Occupation",
        10,
        "single",
        [
            "Teacher",
            "Nurse",
            "Engineer",
            "Sales",
            "Trades",
            "Manager",
            "Artist",
            "Driver",
            "Clerk",
            "Developer",
            "Chef",
            "Lawyer",
            "Farmer",
            "Scientist",
            "Other",
        ],
    ),
    (
        "Sports Interests",
        11,
        "multi",
        [
            "Baseball",
            "Basketball",
            "Football",
            "Soccer",
            "Hockey",
            "Tennis",
            "Golf",
            "Running",
            "Cycling",
            "Swimming",
            "Skiing",
            "Climbing",
        ],
    ),
    (
        "Music Genres",
        12,
        "multi",
        [
            "Rock",
            "Pop",
            "Jazz",
            "Classical",
            "Hip-Hop",
            "Country",
            "Electronic",
            "Folk",
            "Blues",
            "Metal",
            "R&B",
            "Latin",
        ],
    ),
    ("Travel Frequency", 13, "single", ["Never", "Yearly", "Quarterly", "Monthly"]),
    (
        "Dining Preferences",
        14,
        "multi",
        ["Fast food", "Casual dining", "Fine dining", "Vegan", "Takeout", "Home cooking"],
    ),
    ("Shopping Channels", 15, "multi", ["Online", "Big box", "Boutique", "Thrift", "Catalog"]),
    ("Smartphone OS", 16, "single", ["iOS", "Android", "Other"]),
    (
        "Streaming Services",
        17,
        "multi",
        ["Netflix", "Hulu", "Disney+", "Max", "Prime Video", "None"],
    ),
    ("Fitness Activity", 18, "single", ["Daily", "Weekly", "Rarely", "Never"]),
    ("Diet", 19, "single", ["Omnivore", "Vegetarian", "Vegan", "Keto", "Pescatarian"]),
    (
        "Languages Spoken",
        20,
        "multi",
        ["English", "Spanish", "French", "Mandarin", "Portuguese", "Arabic"],
    ),
    ("Commute Mode", 21, "single", ["Car", "Transit", "Bike", "Walk", "Remote"]),
    ("News Sources", 22, "multi", ["TV", "Newspaper", "Podcasts", "Social media", "Radio"]),
    ("Charitable Giving", 23, "single", ["None", "Occasional", "Monthly", "Major donor"]),
    (
        "Investment Types",
        24,
        "multi",
        ["Stocks", "Bonds", "Real estate", "Crypto", "Retirement plan"],
    ),
    ("Credit Card Usage", 25, "single", ["None", "One card", "Several cards", "Rewards maximizer"]),
    ("Health Insurance", 26, "single", ["Employer", "Private", "Medicare", "Medicaid", "None"]),
    (
        "Hobbies",
        27,
        "multi",
        [
            "Gardening",
            "Cooking",
            "Photography",
            "Knitting",
            "Woodworking",
            "Painting",
            "Fishing",
            "Hunting",
            "Camping",
            "Board games",
            "Reading",
            "Writing",
            "Birding",
            "Collecting",
            "DIY",
        ],
    ),
    (
        "Social Media Use",
        28,
        "multi",
        ["Facebook", "Instagram", "TikTok", "X", "LinkedIn", "Reddit"],
    ),
    ("Coffee Consumption", 29, "single", ["None", "1 cup", "2-3 cups", "4+ cups"]),
    ("Gaming Platforms", 30, "multi", ["PC", "PlayStation", "Xbox", "Switch", "Mobile"]),
    (
        "Book Genres",
        31,
        "multi",
        ["Mystery", "Sci-Fi", "Romance", "History", "Biography", "Fantasy"],
    ),
    ("Outdoor Activities", 32, "multi", ["Hiking", "Kayaking", "Hunting", "Beach", "Camping"]),
    (
        "Favorite Snacks",
        33,
        "multi",
        [
            "Chips & Salsa",
            'Grandma\'s "Cookies"',
            "100% Juice",
            "Back\\slash Bars",
            "Ice cream \U0001f366",
        ],
    ),
    ("Phone Carrier", 34, "single", ["Verizon", "AT&T", "T-Mobile", "Other"]),
    (
        "Home Value",
        35,
        "single",
        ["Under $100k", "$100k-$250k", "$250k-$500k", "$500k-$1M", "Over $1M"],
    ),
]

FIRST_NAMES = [
    "Ava",
    "Ben",
    "Carla",
    "Dev",
    "Elena",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jon",
    "Kemi",
    "Liam",
    "Maya",
    "Noor",
    "Oscar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sam",
    "Tariq",
    "Uma",
    "Victor",
    "Wen",
    "Xavier",
    "Yara",
    "Zoë",
    "Seán",
    "D'Andre",
]
LAST_NAMES = [
    "Anders",
    "Brooks",
    "Chen",
    "Diaz",
    "Evans",
    "Fischer",
    "Garcia",
    "Hughes",
    "Ibrahim",
    "Jones",
    "Kim",
    "Lopez",
    "Miller",
    "Nguyen",
    "O'Brien",
    "Patel",
    "Quinn",
    "Rossi",
    "Smith",
    "Tanaka",
    "Usman",
    "Vargas",
    "Walsh",
    "Xu",
    "Young",
    "Zimmer",
    "100% Real",
    "Émoji \U0001f389",
]


@dataclass(frozen=True)
class DemoSpec:
    me_files: int = 10_000
    seed: int = 42
    zips: int = 3000
    targets: int | None = None
    bands_per_target: int | None = None
    # benchmark worlds: target 1's outer band asks for any zip, so every me_file is a member
    broad: bool = False
    # offers made from this many per mille of each band's populations (and from its first row)
    offers_per_mille: int = 30
    # the production cases of DOMAIN.md (NULLs, orphans, ties, odd links), on a target of their own
    edge_cases: bool = False
    # benchmark worlds: the mean number of tags per me_file (None: the demo's own mix, ~39)
    tags_per_me_file: int | None = None
    # benchmark worlds: "equal" gives target 1 three bands of a third of the me_files each
    # (needs bands_per_target=3); "skewed" is the demo's, where one band holds most rows
    bands: str = "skewed"


@dataclass(frozen=True)
class DemoStats:
    me_files: int
    tags: int
    targets: int
    bands: int
    populations: int
    seconds: float
    offers: int = 0
    ad_events: int = 0
    # edge case name -> the ids that hold it (see _insert_edge_catalogue and _populate_edge)
    cases: dict[str, tuple[int, ...]] = field(default_factory=dict)


ProgressFn = Callable[[str], None]


def _h(seed: int, salt: int, expr: str = "m.id") -> str:
    """SQL for a deterministic pseudo-random int in [0, 2^31) from (seed, salt, expr)."""
    return f"(hashint8extended({expr}, {seed * 7919 + salt}) & 2147483647)"


def seed_demo(engine: Engine, spec: DemoSpec | None = None) -> bool:
    """Fill an empty database, or redo an interrupted demo (the generator commits in steps).

    False when there was nothing to do: a finished demo, or tables qsnap did not create.
    """
    with engine.connect() as conn:
        found = has_qlarius_tables(conn)
        if found and (is_complete_demo(conn) or not is_qsnap_demo(conn)):
            return False
    if found:
        log.info("the demo data were not finished last time; making them again")
    generate_demo(engine, spec or DemoSpec(edge_cases=True), reset=found)
    return True


def generate_demo(
    engine: Engine, spec: DemoSpec, *, reset: bool = False, progress: ProgressFn | None = None
) -> DemoStats:
    """Create the schema and fill it; the database must be empty or a qsnap demo (reset)."""
    say = progress or log.info
    started = time.monotonic()
    rng = random.Random(spec.seed)
    edge: _Edge | None = None
    # On a wal_level=minimal server (the embedded one) a table created or truncated in the
    # transaction that fills it skips the WAL: the tags are loaded in the transaction that
    # creates the schema, the populations, offers and ad events in one that truncates them.
    with engine.begin() as conn:
        conn.execute(text("set local synchronous_commit = off"))
        create_demo_schema(conn, reset=reset)
        parents = _insert_traits(conn, rng, spec)
        _insert_me_files(conn, spec)
        if spec.tags_per_me_file is None and spec.bands == "skewed":
            tags = _insert_tags(conn, spec, parents)
        else:
            tags = _insert_drawn_tags(conn, spec, parents)
        targets = _insert_targets(conn, rng, spec, parents)
        if spec.edge_cases:
            edge = _insert_edge_catalogue(conn, spec, parents)
            tags += edge.tags
    say(f"me_files: {spec.me_files}, tags: {tags} ({time.monotonic() - started:.1f}s)")
    _index_in_parallel(engine, MeFileTag.__table__, primary_key="me_file_tags_pkey")
    say(f"tags indexed ({time.monotonic() - started:.1f}s)")
    with engine.begin() as conn:
        conn.execute(text("set local synchronous_commit = off"))
        conn.execute(text(f"set local work_mem = '{STAGING_WORK_MEM}'"))
        conn.execute(text("truncate target_populations, offers, ad_events"))
        # populations, offers and ad events are written without their indexes, which are
        # then built sorted
        for table in BULK_TABLES:
            for index in table.indexes:
                index.drop(conn)
        conn.execute(text("analyze"))
        for target_id, status in targets:
            if status == "not_populated":
                continue
            _populate(conn, spec, target_id)
            _mark_populated(conn, target_id, status)
            say(f"target {target_id}: populated ({time.monotonic() - started:.1f}s)")
        if edge is not None:
            _populate_edge(conn, spec, edge)
            _mark_populated(conn, edge.target, "populated")
        offers, ad_events = _insert_offers(conn, spec)
        if edge is not None:
            _insert_edge_offers(conn, edge)
        say(f"offers: {offers}, ad events: {ad_events} ({time.monotonic() - started:.1f}s)")
        conn.execute(text("set local maintenance_work_mem = '512MB'"))
        for table in BULK_TABLES:
            for index in table.indexes:
                index.create(conn)
        conn.execute(text(f"comment on table target_populations is '{DEMO_COMPLETE}'"))
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(text("vacuum analyze"))
        counts = conn.execute(
            text(
                "select (select count(*) from targets), (select count(*) from target_bands), "
                "(select count(*) from target_populations), (select count(*) from offers), "
                "(select count(*) from ad_events)"
            )
        ).one()
    stats = DemoStats(
        spec.me_files,
        tags,
        counts[0],
        counts[1],
        counts[2],
        time.monotonic() - started,
        offers=counts[3],
        ad_events=counts[4],
        cases=dict(edge.cases) if edge else {},
    )
    say(
        f"demo data ready: {stats.me_files} me_files, {stats.tags} tags, {stats.targets} "
        f"targets, {stats.bands} bands, {stats.populations} populations, {stats.offers} offers, "
        f"{stats.ad_events} ad events in {stats.seconds:.1f}s"
    )
    return stats


def _mark_populated(conn: Connection, target_id: int, status: str) -> None:
    conn.execute(
        text("update targets set population_status = :s, last_populated_at = :at where id = :t"),
        {"s": status, "t": target_id, "at": BASE_TIME + timedelta(days=target_id)},
    )


def _index_in_parallel(engine: Engine, table: Table, *, primary_key: str) -> None:
    """Build a table's primary key and indexes at once, one connection each.

    Index builds sort the whole table on one core each (55 s one after the other for 39 M
    tags). The primary key is built as a unique index, then attached: ADD PRIMARY KEY would
    lock the table against the other builds.
    """
    statements = [f"create unique index {primary_key} on {table.name} (id)"] + [
        str(CreateIndex(index).compile(dialect=engine.dialect)) for index in table.indexes
    ]

    def build(statement: str) -> None:
        with engine.begin() as conn:
            conn.execute(text("set local maintenance_work_mem = '512MB'"))
            conn.execute(text("set local synchronous_commit = off"))
            conn.execute(text(statement))

    with ThreadPoolExecutor(max_workers=len(statements)) as pool:
        list(pool.map(build, statements))
    with engine.begin() as conn:
        conn.execute(
            text(
                f"alter table {table.name} add constraint {primary_key} "
                f"primary key using index {primary_key}"
            )
        )


def _audit(ts: datetime) -> dict[str, object]:
    return {"added_date": ts, "modified_date": ts, "added_by": 1, "modified_by": 1}


@dataclass(frozen=True)
class _Parent:
    id: int
    name: str
    kind: str
    children: tuple[int, ...]
    values: tuple[str, ...]


def _insert_traits(conn: Connection, rng: random.Random, spec: DemoSpec) -> list[_Parent]:
    rows: list[dict[str, object]] = []
    parents: list[_Parent] = []
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
                **_audit(BASE_TIME),
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
                    **_audit(BASE_TIME),
                }
            )
            ids.append(next_id)
            next_id += 1
        parents.append(_Parent(parent_id, name, kind, tuple(ids), tuple(values)))
    orphan_parent = next_id + 1000
    rows.append(
        {
            "id": next_id,
            "trait_name": "Orphaned answer",
            "display_order": 1,
            "parent_trait_id": orphan_parent,
            "is_active": False,
            "input_type": INPUT_TYPES["single"],
            **_audit(BASE_TIME),
        }
    )
    conn.execute(insert(Trait), rows)
    conn.execute(text("select setval(pg_get_serial_sequence('traits', 'id'), :v)"), {"v": next_id})
    return parents


def _insert_me_files(conn: Connection, spec: DemoSpec) -> None:
    conn.execute(
        text(
            f"""
            insert into me_files (id, display_name, created_at, updated_at)
            select m.id,
                   (cast(:first as text[]))[1 + {_h(spec.seed, 1)} % :nf] || ' ' ||
                   (cast(:last as text[]))[1 + {_h(spec.seed, 2)} % :nl],
                   :base + make_interval(secs => {_h(spec.seed, 3)} % 31536000),
                   :base + make_interval(secs => {_h(spec.seed, 3)} % 31536000)
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


def _insert_tags(conn: Connection, spec: DemoSpec, parents: list[_Parent]) -> int:
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
    _drop_tag_indexes(conn)
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
                       {_h(seed, 0, "m.id * 97 + dp.salt")} % dp.n as idx,
                       {_h(seed, 5)} % 400 as blank
                from generate_series(1, :n) as m(id)
                cross join demo_parents dp
                where dp.kind = 'zip'
                   or (dp.kind = 'single' and {_h(seed, 0, "m.id * 31 + dp.salt")} % 100 < dp.pct)
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
                             {_h(seed, 0, "m.id * 53 + dp.salt")} % dp.n as start,
                             least({_h(seed, 0, "m.id * 71 + dp.salt")} % 4, dp.n) as picks
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


def _drop_tag_indexes(conn: Connection) -> None:
    """Bulk load without indexes (built afterwards, see _index_in_parallel): maintaining the
    primary key and two indexes row by row, and drawing each id from the sequence, cost more
    than the rows."""
    conn.execute(text("alter table me_file_tags drop constraint me_file_tags_pkey"))
    for index in MeFileTag.__table__.indexes:
        index.drop(conn)


# the equal-bands world: everyone has one of these three answers (a third each), and at least
# one tag of the two parents every band of it asks for
EQUAL_SEGMENT = "Smartphone OS"
EQUAL_FILLERS = ("Hobbies", "Music Genres")
# tag ids are me_file id * TAG_SLOTS + the child's slot (every zip shares slot 0)
TAG_SLOTS = 256


@dataclass(frozen=True)
class _Draw:
    """How many tags of one parent a me_file gets. A single answer: one, with ``chance`` in
    10,000. A multi select: ``low + floor(u * spread)`` picks (u uniform in [0, 1)), or
    ``n - floor(u * spread)`` when ``mirrored``, of consecutive children."""

    parent: _Parent
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


def _multi_draw(parent: _Parent, low: int, mean: float) -> _Draw:
    n = len(parent.children)
    mean = min(max(mean, low), n)
    if mean - low <= (n - low) / 2:
        return _Draw(parent, low=low, spread=2 * (mean - low) + 1)
    return _Draw(parent, low=low, spread=2 * (n - mean) + 1, mirrored=True)


def tag_draws(spec: DemoSpec, parents: list[_Parent]) -> list[_Draw]:
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


def _insert_drawn_tags(conn: Connection, spec: DemoSpec, parents: list[_Parent]) -> int:
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
    _drop_tag_indexes(conn)
    seed = spec.seed
    u = f"({_h(seed, 0, 'm.id * 71 + d.salt')} / 2147483648.0)"
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
                       {_h(seed, 0, "m.id * 97 + d.salt")} % d.n as idx,
                       {_h(seed, 5)} % 400 as blank
                from generate_series(1, :n) as m(id)
                cross join demo_draws d
                where d.kind <> 'multi' and {_h(seed, 0, "m.id * 31 + d.salt")} % 10000 < d.chance
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
                       {_h(seed, 0, "m.id * 53 + d.salt")} % d.n as start,
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


TARGET_NAMES = [
    "Cambridge Renters",
    "Suburban Homeowners",
    "Pet Lovers \U0001f43e",
    'Young "Urban" Professionals',
    "100% Outdoor Adventurers",
    "Home Décor Enthusiasts",
]


def _equal_groups(by_name: dict[str, _Parent], band: int) -> list[tuple[_Parent, list[int]]]:
    """The groups band ``band`` (0 = outermost) of the equal-bands target adds: every band
    asks for a zip and a hobby, the inner two a music genre; the segment answer then puts a
    third of the me_files in each band (any / the last two / the last one of three)."""
    segment = by_name[EQUAL_SEGMENT]
    hobbies, music = (by_name[name] for name in EQUAL_FILLERS)
    zips = by_name["Home Zip Code"]
    return [
        [(zips, list(zips.children)), (hobbies, list(hobbies.children))],
        [(music, list(music.children)), (segment, list(segment.children[1:]))],
        [(segment, list(segment.children[2:]))],
    ][band]


def _insert_targets(
    conn: Connection, rng: random.Random, spec: DemoSpec, parents: list[_Parent]
) -> list[tuple[int, str]]:
    """Targets of 2-4 nested bands; each band adds 1-2 trait groups to the one outside it."""
    count = spec.targets or rng.randint(4, 6)
    by_name = {p.name: p for p in parents}
    usable = [p for p in parents if p.kind != "zip"]
    targets: list[tuple[int, str]] = []
    group_id = 0
    band_id = 0
    link_rows: list[dict[str, object]] = []
    band_group_rows: list[dict[str, object]] = []
    for t in range(count):
        target_id = t + 1
        title = TARGET_NAMES[t % len(TARGET_NAMES)]
        status = "populated"
        if t == count - 1 and count >= 4:
            status = "not_populated"
        elif t == 2:
            status = "populating"
        conn.execute(
            insert(Target),
            {
                "id": target_id,
                "title": title,
                "description": f"Demo audience {target_id}",
                "marketer_id": 1 + t % 2,
                "population_status": "not_populated",
                "last_populated_at": None,
                "created_at": BASE_TIME,
                "updated_at": BASE_TIME,
            },
        )
        targets.append((target_id, status))
        nbands = spec.bands_per_target or rng.randint(2, 4)
        chosen = rng.sample(usable, 2 * nbands)
        if t == 0 and by_name["Home Own/Rent"] not in chosen:
            chosen[0] = by_name["Home Own/Rent"]
        if t == 0 and spec.broad:
            chosen[0] = by_name["Home Zip Code"]
        equal = t == 0 and spec.bands == "equal"
        if equal and nbands != 3:
            raise UsageError("equal bands are three bands: give bands_per_target=3")
        groups_so_far: list[int] = []
        for b in range(nbands):
            if equal:
                added = _equal_groups(by_name, b)
            else:
                added = []
                for parent in chosen[2 * b : 2 * b + (1 if b == 0 else rng.randint(1, 2))]:
                    share = max(1, round(len(parent.children) * rng.uniform(0.5, 0.85)))
                    if parent.kind == "zip":
                        share = len(parent.children)
                    added.append((parent, rng.sample(parent.children, share)))
            for parent, picked in added:
                group_id += 1
                conn.execute(
                    insert(TraitGroup),
                    {
                        "id": group_id,
                        "title": f"{parent.name}: {len(picked)} of {len(parent.children)}",
                        "description": None,
                        "parent_trait_id": parent.id,
                        "marketer_id": 1,
                        "deactivated_at": None,
                        "created_at": BASE_TIME,
                        "updated_at": BASE_TIME,
                    },
                )
                link_rows.extend(
                    {
                        "trait_group_id": group_id,
                        "trait_id": trait_id,
                        "created_at": BASE_TIME,
                        "updated_at": BASE_TIME,
                    }
                    for trait_id in picked
                )
                groups_so_far.append(group_id)
            band_id += 1
            innermost = b == nbands - 1
            conn.execute(
                insert(TargetBand),
                {
                    "id": band_id,
                    "target_id": target_id,
                    "title": "Bullseye" if innermost else f"Ring {nbands - 1 - b}",
                    "description": None,
                    "is_bullseye": "1" if innermost else "0",
                    "created_at": BASE_TIME,
                    "updated_at": BASE_TIME,
                },
            )
            band_group_rows.extend(
                {
                    "target_band_id": band_id,
                    "trait_group_id": g,
                    "created_at": BASE_TIME,
                    "updated_at": BASE_TIME,
                }
                for g in groups_so_far
            )
    link_rows.append(
        {"trait_group_id": 1, "trait_id": 999_999, "created_at": BASE_TIME, "updated_at": BASE_TIME}
    )
    conn.execute(insert(TraitGroupTrait), link_rows)
    conn.execute(insert(TargetBandTraitGroup), band_group_rows)
    for table, value in (("targets", count), ("target_bands", band_id), ("trait_groups", group_id)):
        conn.execute(
            text(f"select setval(pg_get_serial_sequence('{table}', 'id'), :v)"), {"v": value}
        )
    return targets


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
class _Edge:
    target: int
    outer: int
    bullseye: int
    gone_band: int
    me_files: tuple[int, ...]
    ghost: int
    tags: int
    cases: dict[str, tuple[int, ...]]


def _insert_edge_catalogue(conn: Connection, spec: DemoSpec, parents: list[_Parent]) -> _Edge:
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
            **_audit(at),
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
            tag_id = new(MeFileTag, me_file_id=m, trait_id=trait_id, tag_value=value, **_audit(at))
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
    return _Edge(edge_target, outer, bullseye, gone_band, me_files, ghost, tags, cases)


def _populate_edge(conn: Connection, spec: DemoSpec, edge: _Edge) -> None:
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
        _fill_band(conn, spec, band_id, len(me_files), at)
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


def _insert_edge_offers(conn: Connection, edge: _Edge) -> None:
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


def _populate(conn: Connection, spec: DemoSpec, target_id: int) -> None:
    """The target's populations by the DOMAIN.md rules, inserted with their snapshots.

    Per mille of each band: good envelopes for most rows, a few of every broken shape, the
    rest NULL. Each row is written once, snapshot included (a NULL insert and an update
    per row cost twice as much).
    """
    band_ids = outermost_first(conn, target_id)
    compute_membership(conn, band_ids)
    conn.execute(text("create index on qsnap_membership (band_id)"))
    bucket = f"({_h(spec.seed, 9, 'm.me_file_id * 64 + m.band_id')} % 1000)"
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
        _fill_band(conn, spec, band_id, rows, at)
    conn.execute(
        text("drop table if exists qsnap_membership, qsnap_member_traits, qsnap_member_masks")
    )


def _fill_band(conn: Connection, spec: DemoSpec, band_id: int, rows: int, at: datetime) -> None:
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


def _insert_offers(conn: Connection, spec: DemoSpec) -> tuple[int, int]:
    """Offers from a few populations of each band, and ad events from half of those offers.

    As the application makes them: an offer copies its population's snapshot, but one made
    while that snapshot was still NULL stayed NULL (also after the population was filled);
    an ad event copies its offer's.
    """
    offers = conn.execute(
        text(
            f"""
            insert into offers (campaign_id, me_file_id, media_run_id, media_piece_id,
                                ad_phase_count_to_complete, target_band_id, offer_amt,
                                marketer_cost_amt, is_payable, is_current, created_at,
                                updated_at, matching_tags_snapshot)
            select b.target_id, p.me_file_id, b.target_id * 10 + 1, b.target_id * 10 + 1, 3,
                   p.target_band_id, 0.50, 0.75, true, true,
                   p.created_at + interval '1 hour', p.created_at + interval '1 hour',
                   case when {_h(spec.seed, 11, "p.id")} % 100 < 15 then null
                        else p.matching_tags_snapshot end
            from target_populations p
            join target_bands b on b.id = p.target_band_id
            where p.me_file_id is not null and b.target_id is not null
              and ({_h(spec.seed, 10, "p.id")} % 1000 < :per_mille
                   or p.id in (select min(id) from target_populations group by target_band_id))
            """
        ),
        {"per_mille": spec.offers_per_mille},
    ).rowcount
    events = conn.execute(
        text(
            f"""
            insert into ad_events (campaign_id, me_file_id, media_run_id, media_piece_id,
                                   media_piece_phase_id, target_id, target_band_id, offer_id,
                                   offer_bid_amt, is_payable, is_throttled, is_demo,
                                   is_offer_complete, offer_marketer_cost_amt,
                                   event_marketer_cost_amt, event_me_file_collect_amt,
                                   event_sponster_collect_amt, ip_address, url, created_at,
                                   updated_at, matching_tags_snapshot)
            select o.campaign_id, o.me_file_id, o.media_run_id, o.media_piece_id, 1,
                   o.campaign_id, o.target_band_id, o.id, o.offer_amt, true, false, false,
                   false, o.marketer_cost_amt, 0.25, 0.25, 0.25,
                   '203.0.113.' || (o.id % 250 + 1), 'https://example.com/demo-ad',
                   o.created_at + interval '1 hour', o.created_at + interval '1 hour',
                   case when {_h(spec.seed, 13, "o.id")} % 100 < 10 then null
                        else o.matching_tags_snapshot end
            from offers o
            where {_h(spec.seed, 12, "o.id")} % 2 = 0
            """
        )
    ).rowcount
    return offers, events


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


def ensure_demo_database() -> str:
    """The URL of the demo database, creating schema and demo data on first start."""
    from qsnap_gui.tools.demo import seed_demo

    url = create_database(DEMO_DATABASE)
    engine = make_engine(normalize_url(url), pool_size=2)
    try:
        if seed_demo(engine):
            log.info("seeded the embedded demo database")
    finally:
        engine.dispose()
    return url
