"""The entry points: generate_demo runs every step in order, in as few transactions as the
bulk load allows; seed_demo and ensure_demo_database make the embedded demo database.
"""

from __future__ import annotations

import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlalchemy import Connection, Engine, Table, text
from sqlalchemy.schema import CreateIndex

from qsnap_gui.engine.snapshot_sql import STAGING_WORK_MEM
from qsnap_gui.store.db import DEMO_COMPLETE, is_complete_demo, is_qsnap_demo, make_engine
from qsnap_gui.store.dsn import normalize_url
from qsnap_gui.store.embedded import DEMO_DATABASE, create_database
from qsnap_gui.store.schema import create_demo_schema, has_qlarius_tables
from qsnap_gui.store.tables import AdEvent, MeFileTag, Offer, TargetPopulation
from qsnap_gui.tools.demo.catalogue import BASE_TIME
from qsnap_gui.tools.demo.draws import insert_drawn_tags
from qsnap_gui.tools.demo.edge import Edge, insert_edge_catalogue, insert_edge_offers, populate_edge
from qsnap_gui.tools.demo.offers import insert_offers
from qsnap_gui.tools.demo.populations import populate
from qsnap_gui.tools.demo.spec import DemoSpec, DemoStats, ProgressFn
from qsnap_gui.tools.demo.tags import insert_me_files, insert_tags, insert_traits
from qsnap_gui.tools.demo.targets import insert_targets

log = logging.getLogger(__name__)


# tables bulk-loaded without their indexes
BULK_TABLES = (TargetPopulation.__table__, Offer.__table__, AdEvent.__table__)


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
    edge: Edge | None = None
    # On a wal_level=minimal server (the embedded one) a table created or truncated in the
    # transaction that fills it skips the WAL: the tags are loaded in the transaction that
    # creates the schema, the populations, offers and ad events in one that truncates them.
    with engine.begin() as conn:
        conn.execute(text("set local synchronous_commit = off"))
        create_demo_schema(conn, reset=reset)
        parents = insert_traits(conn, rng, spec)
        insert_me_files(conn, spec)
        if spec.tags_per_me_file is None and spec.bands == "skewed":
            tags = insert_tags(conn, spec, parents)
        else:
            tags = insert_drawn_tags(conn, spec, parents)
        targets = insert_targets(conn, rng, spec, parents)
        if spec.edge_cases:
            edge = insert_edge_catalogue(conn, spec, parents)
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
            populate(conn, spec, target_id)
            _mark_populated(conn, target_id, status)
            say(f"target {target_id}: populated ({time.monotonic() - started:.1f}s)")
        if edge is not None:
            populate_edge(conn, spec, edge)
            _mark_populated(conn, edge.target, "populated")
        offers, ad_events = insert_offers(conn, spec)
        if edge is not None:
            insert_edge_offers(conn, edge)
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


def ensure_demo_database() -> str:
    """The URL of the demo database, creating schema and demo data on first start."""
    url = create_database(DEMO_DATABASE)
    engine = make_engine(normalize_url(url), pool_size=2)
    try:
        if seed_demo(engine):
            log.info("seeded the embedded demo database")
    finally:
        engine.dispose()
    return url
