"""The benchmark world: a demo data set whose target 1 has three bands over every me_file,
made in a scratch database of the bench's server and reused while it is kept."""

from __future__ import annotations

import time
from contextlib import suppress

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from qsnap_gui.store.db import is_complete_demo, make_engine
from qsnap_gui.store.dsn import normalize_url
from qsnap_gui.store.schema import has_qlarius_tables
from qsnap_gui.tools.bench.figures import WorldOptions
from qsnap_gui.tools.bench.servers import BenchServer
from qsnap_gui.tools.demo import DemoSpec, generate_demo

BENCH_TARGET = 1


def scratch_name(scale: int, world: WorldOptions | None = None) -> str:
    """The scratch database of a world; the default world keeps its old name."""
    world = world or WorldOptions()
    if world == WorldOptions():
        return f"qsnap_bench_{scale}"
    return f"qsnap_bench_{scale}_{world.tags_per_me_file}t_{world.bands}"


def world_spec(scale: int, world: WorldOptions) -> DemoSpec:
    return DemoSpec(
        me_files=scale,
        seed=1,
        targets=1,
        bands_per_target=3,
        broad=True,
        tags_per_me_file=world.tags_per_me_file,
        bands=world.bands,
    )


def bench_database(
    server: BenchServer, scale: int, world: WorldOptions, say
) -> tuple[str, float | None]:
    """A scratch database of ``server`` holding the benchmark world at this scale; the
    generator's seconds, or None when a kept world was reused."""
    name = scratch_name(scale, world)
    url = server.create(name)
    engine = make_engine(normalize_url(url), pool_size=2)
    try:
        with engine.connect() as conn:
            # a world whose generator was stopped half-way is made again, not timed
            ready = (
                has_qlarius_tables(conn)
                and is_complete_demo(conn)
                and conn.execute(text("select count(*) from me_files")).scalar() == scale
            )
        seconds = None
        if not ready:
            say(f"scale {scale}: generating the benchmark world in {name}")
            started = time.perf_counter()
            generate_demo(engine, world_spec(scale, world), reset=True)
            seconds = time.perf_counter() - started
    finally:
        engine.dispose()
    return url, seconds


def prepare(engine: Engine, null_snapshots: bool = True) -> None:
    """NULL snapshots on the bench target (optionally), then VACUUM ANALYZE and CHECKPOINT, so
    every run starts from the same table."""
    with engine.begin() as conn:
        if null_snapshots:
            conn.execute(
                text(
                    "update target_populations set matching_tags_snapshot = null "
                    "where target_band_id in (select id from target_bands where target_id = :t)"
                ),
                {"t": BENCH_TARGET},
            )
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(text("vacuum analyze"))
        # a role without superuser or pg_checkpoint leaves checkpoints to the server
        with suppress(DBAPIError):
            conn.execute(text("checkpoint"))


def autovacuum(engine: Engine, enabled: bool) -> None:
    """Autovacuum on or off for the table the strategies write, in the scratch database.

    The bench vacuums between strategies itself; an autovacuum landing inside one timed run
    (its naptime is a minute; a strategy leaves a million dead rows) cost up to 6 s of 20 on
    two cores, so the same strategy varied by a third from run to run.
    """
    with engine.begin() as conn:
        if enabled:
            conn.execute(text("alter table target_populations reset (autovacuum_enabled)"))
        else:
            conn.execute(text("alter table target_populations set (autovacuum_enabled = off)"))
