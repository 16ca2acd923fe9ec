"""One scale of the bench: the strategies side by side over the same rows (each starting from
NULL snapshots after VACUUM ANALYZE and CHECKPOINT), jsonb equality of qsnap's rows with the
port's, the stale repair of one band against its force re-snapshot, ``qsnap populate``, and
the views while a snapshot job runs."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from contextlib import suppress

from sqlalchemy import Engine, text

from qsnap_gui.engine.population import apply_membership
from qsnap_gui.engine.preview import preview_refresh
from qsnap_gui.store.db import make_engine
from qsnap_gui.store.dsn import normalize_url
from qsnap_gui.tools.bench.children import (
    process_start,
    qsnap_command,
    run_child,
    strategy_command,
)
from qsnap_gui.tools.bench.figures import (
    PreviewFigures,
    ScaleFigures,
    StaleFigures,
    StrategyFigures,
    ViewFigures,
    ViewTiming,
    WorldOptions,
)
from qsnap_gui.tools.bench.servers import BenchServer
from qsnap_gui.tools.bench.strategies import BASELINE_TABLE, STRATEGIES, URL_VARIABLE
from qsnap_gui.tools.bench.worlds import (
    BENCH_TARGET,
    autovacuum,
    bench_database,
    prepare,
    scratch_name,
)

# the share of one band's rows the stale repair figure makes stale
STALE_PER_MILLE = 10
# updated_at of every row of the band before a timed repair: a row written moves it
UNTOUCHED = "2000-01-01 00:00:00"


def bench_scale(
    server: BenchServer,
    scale: int,
    repeat: int,
    say,
    keep: bool = False,
    world: WorldOptions | None = None,
) -> ScaleFigures:
    """Time one scale; its scratch database is dropped afterwards unless ``keep`` (a kept
    world is reused by the next bench at the same scale and options, without generating it
    again)."""
    world = world or WorldOptions()
    name = scratch_name(scale, world)
    try:
        url, generator_seconds = bench_database(server, scale, world, say)
        engine = make_engine(normalize_url(url), pool_size=4)
        try:
            autovacuum(engine, False)
            figures = _bench_world(engine, url, scale, generator_seconds, repeat, say)
        finally:
            autovacuum(engine, True)
            engine.dispose()
    finally:
        if not keep:
            server.drop(name)
            say(f"scale {scale}: dropped {name} (--keep keeps it for the next bench)")
    figures.server, figures.settings, figures.world = server.label, dict(server.settings), world
    return figures


def _band_ids(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text("select id from target_bands where target_id = :t order by id"),
                {"t": BENCH_TARGET},
            ).scalars()
        )


def _bench_world(
    engine: Engine, url: str, scale: int, generator_seconds: float | None, repeat: int, say
) -> ScaleFigures:
    band_ids = _band_ids(engine)
    with engine.connect() as conn:
        band_rows = [
            conn.execute(
                text("select count(*) from target_populations where target_band_id = :b"),
                {"b": b},
            ).scalar_one()
            for b in band_ids
        ]
        tags = conn.execute(text("select count(*) from me_file_tags")).scalar_one()
    figures = ScaleFigures(scale, sum(band_rows), generator_seconds)
    figures.band_rows, figures.tags = band_rows, tags
    for name in STRATEGIES:
        runs = []
        for r in range(repeat):
            prepare(engine)
            run = run_child(strategy_command(name, band_ids), url, f"the {name} strategy")
            connections = [
                int(line.split()[1])
                for line in run.output.splitlines()
                if line.startswith("connections ")
            ]
            runs.append((run.seconds, run.peak_rss_mb, connections[-1] if connections else None))
            say(f"scale {scale}: {name} run {r + 1}: {run.seconds:.2f}s, {run.peak_rss_mb:.0f} MB")
        if name == "baseline":
            keep_baseline(engine, band_ids)
        if name == "qsnap":
            figures.mismatches = _mismatches(engine, band_ids)
            figures.snapshots_equal = figures.mismatches == 0
        figures.strategies[name] = StrategyFigures(
            statistics.median(s for s, _, _ in runs),
            figures.populations,
            max(m for _, m, _ in runs),
            runs[-1][2],
        )
    figures.process_start_seconds = process_start(url)
    figures.stale = stale_repair(engine, url, band_ids, say)
    figures.preview = preview_against_membership(engine, repeat)
    say(f"scale {scale}: preview timed against the refresh's membership step")
    with engine.begin() as conn:
        conn.execute(text(f"drop table if exists {BASELINE_TABLE}"))
        conn.execute(
            text(
                "delete from target_populations where target_band_id in "
                "(select id from target_bands where target_id = :t)"
            ),
            {"t": BENCH_TARGET},
        )
    prepare(engine, null_snapshots=False)
    run = run_child(qsnap_command("populate", str(BENCH_TARGET)), url, "qsnap populate")
    figures.populate_seconds, figures.populate_rss_mb = run.seconds, run.peak_rss_mb
    say(f"scale {scale}: populate {run.seconds:.2f}s, {run.peak_rss_mb:.0f} MB")
    figures.views = views_during_job(engine, url, band_ids)
    say(f"scale {scale}: views timed while a snapshot job ran")
    return figures


def keep_baseline(engine: Engine, band_ids: list[int]) -> None:
    """The port's snapshots, what every other writer is compared with."""
    with engine.begin() as conn:
        conn.execute(text(f"drop table if exists {BASELINE_TABLE}"))
        conn.execute(
            text(
                f"create table {BASELINE_TABLE} as select id, target_band_id, "
                "matching_tags_snapshot as snap from target_populations "
                "where target_band_id = any(:b)"
            ),
            {"b": band_ids},
        )
        conn.execute(text(f"alter table {BASELINE_TABLE} add primary key (id)"))


def _mismatches(engine: Engine, band_ids: list[int]) -> int:
    """Rows whose snapshot is not jsonb-equal to the port's (a row on one side only counts)."""
    with engine.connect() as conn:
        return conn.execute(
            text(
                f"select count(*) from target_populations tp full join {BASELINE_TABLE} b "
                "on b.id = tp.id where (tp.target_band_id = any(:b) or b.id is not null) "
                "and tp.matching_tags_snapshot is distinct from b.snap"
            ),
            {"b": band_ids},
        ).scalar_one()


def _written(engine: Engine, band_ids: list[int]) -> int:
    with engine.connect() as conn:
        return conn.execute(
            text(
                "select count(*) from target_populations "
                "where target_band_id = any(:b) and updated_at > :mark"
            ),
            {"b": band_ids, "mark": UNTOUCHED},
        ).scalar_one()


def _restore_baseline(engine: Engine, band_ids: list[int]) -> None:
    """Every row back to the port's snapshot, every updated_at to the mark."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "update target_populations tp set matching_tags_snapshot = b.snap, "
                f"updated_at = :mark from {BASELINE_TABLE} b "
                "where b.id = tp.id and tp.target_band_id = any(:b)"
            ),
            {"b": band_ids, "mark": UNTOUCHED},
        )
    prepare(engine, null_snapshots=False)


def stale_repair(engine: Engine, url: str, band_ids: list[int], say) -> StaleFigures:
    """1 % of the largest band's rows made stale (their me_files' tags on the band's traits
    change value); then ``qsnap backfill --include stale --yes`` of the target against
    ``qsnap snapshot --band --mode force``, each from the same state, each its own process.
    Rows written are rows whose updated_at moved, in every band of the target."""
    with engine.connect() as conn:
        band_id, band_rows = conn.execute(
            text(
                "select target_band_id, count(*) from target_populations "
                "where target_band_id = any(:b) group by 1 order by 2 desc, 1 limit 1"
            ),
            {"b": band_ids},
        ).one()
    with engine.begin() as conn:
        conn.execute(text("drop table if exists qsnap_bench_tags"))
        conn.execute(
            text(
                "create table qsnap_bench_tags as "
                "select mt.id, mt.me_file_id, mt.tag_value from me_file_tags mt "
                "join target_populations tp on tp.me_file_id = mt.me_file_id "
                "where tp.target_band_id = :band and tp.id % 1000 < :per_mille "
                "and mt.trait_id in (select t.id from target_band_trait_groups g "
                "join trait_group_traits gt on gt.trait_group_id = g.trait_group_id "
                "join traits t on t.id = gt.trait_id where g.target_band_id = :band)"
            ),
            {"band": band_id, "per_mille": STALE_PER_MILLE},
        )
        stale_rows = conn.execute(
            text("select count(distinct me_file_id) from qsnap_bench_tags")
        ).scalar_one()
        conn.execute(
            text(
                "update me_file_tags mt set tag_value = coalesce(mt.tag_value, '') || ' (moved)' "
                "from qsnap_bench_tags s where s.id = mt.id"
            )
        )
    try:
        _restore_baseline(engine, band_ids)
        stale = run_child(
            qsnap_command("backfill", "--include", "stale", "--yes", "--target", str(BENCH_TARGET)),
            url,
            "qsnap backfill --include stale",
        )
        stale_written = _written(engine, band_ids)
        with engine.begin() as conn:
            conn.execute(text("drop table if exists qsnap_bench_repaired"))
            conn.execute(
                text(
                    "create table qsnap_bench_repaired as select id, matching_tags_snapshot "
                    "as snap from target_populations where target_band_id = any(:b)"
                ),
                {"b": band_ids},
            )
        say(f"stale repair of {stale_rows} rows: {stale.seconds:.2f}s, {stale_written} written")
        _restore_baseline(engine, band_ids)
        force = run_child(
            qsnap_command("snapshot", "--band", str(band_id), "--mode", "force"),
            url,
            "qsnap snapshot --mode force",
        )
        force_written = _written(engine, band_ids)
        say(f"force re-snapshot of band {band_id}: {force.seconds:.2f}s, {force_written} written")
        with engine.connect() as conn:
            # both end on the same rows, and differ from the port's in the stale rows only
            differ = conn.execute(
                text(
                    "select count(*) filter (where r.snap is distinct from tp.matching_tags_snapshot),"
                    " count(*) filter (where b.snap is distinct from tp.matching_tags_snapshot) "
                    "from target_populations tp join qsnap_bench_repaired r on r.id = tp.id "
                    f"join {BASELINE_TABLE} b on b.id = tp.id"
                )
            ).one()
    finally:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "update me_file_tags mt set tag_value = s.tag_value "
                    "from qsnap_bench_tags s where s.id = mt.id"
                )
            )
            conn.execute(text("drop table if exists qsnap_bench_tags, qsnap_bench_repaired"))
    return StaleFigures(
        band_id=band_id,
        band_rows=band_rows,
        stale_rows=stale_rows,
        stale_seconds=stale.seconds,
        stale_written=stale_written,
        stale_rss_mb=stale.peak_rss_mb,
        force_seconds=force.seconds,
        force_written=force_written,
        force_rss_mb=force.peak_rss_mb,
        equal=differ[0] == 0 and differ[1] == stale_rows,
    )


def preview_against_membership(engine: Engine, repeat: int = 1) -> PreviewFigures:
    """The preview and the refresh's membership step, in turns on the same populations (the
    membership step runs in a transaction rolled back, so every run sees the same rows).

    The stale check rebuilds every kept snapshot: it runs ``repeat`` times, the others at
    least three times each."""
    times: dict[str, list[float]] = {"membership": [], "preview": [], "stale": []}

    def timed(name: str, work) -> None:
        started = time.perf_counter()
        with engine.connect() as conn:
            work(conn)
        times[name].append(time.perf_counter() - started)

    def membership(conn) -> None:
        apply_membership(conn, BENCH_TARGET)
        conn.rollback()

    for run in range(max(repeat, 3)):
        timed("membership", membership)
        timed("preview", lambda conn: preview_refresh(conn, BENCH_TARGET, stale=False))
        if run < repeat:
            timed("stale", lambda conn: preview_refresh(conn, BENCH_TARGET, stale=True))
    return PreviewFigures(
        *(statistics.median(times[k]) for k in ("membership", "preview", "stale"))
    )


def median_seconds(read, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        read()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def views_during_job(engine: Engine, url: str, band_ids: list[int]) -> ViewFigures:
    """Time the window's and the command line's views while `qsnap snapshot --target` fills
    every snapshot of the benchmark target in another process: from its first commit to its
    end, a round of reads every second or so, as an operator clicking around would."""
    from qsnap_gui.engine import targets, views
    from qsnap_gui.store import queries

    def cli_targets() -> None:
        with engine.connect() as conn:
            targets.list_targets(conn, orphans=True)

    reads = {
        "targets": lambda: views.list_targets(engine),
        "cli_targets": cli_targets,
        "bands": lambda: views.list_bands(engine, BENCH_TARGET, shapes=False),
    }
    times: dict[str, list[float]] = {name: [] for name in reads}
    prepare(engine)
    with engine.connect() as conn:
        before = sum(c.missing for c in queries.band_counts(conn, band_ids).values())
    job = subprocess.Popen(
        qsnap_command("snapshot", "--target", str(BENCH_TARGET)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "QSNAP_DATABASE_URL": url, URL_VARIABLE: url},
    )
    try:
        deadline = time.monotonic() + 120
        while job.poll() is None and time.monotonic() < deadline:  # until its first commit
            with engine.connect() as conn:
                now = sum(c.missing for c in queries.band_counts(conn, band_ids).values())
            if now < before:
                break
            time.sleep(0.05)
        shapes_seconds = median_seconds(lambda: views.band_shape_counts(engine, band_ids), 1)
        rounds_during_job = 0
        while True:
            for name, read in reads.items():
                times[name].append(median_seconds(read, 1))
            if job.poll() is not None:
                break
            rounds_during_job += 1
            with suppress(subprocess.TimeoutExpired):
                job.wait(timeout=1)
    finally:
        job.wait()
    timing = {
        name: ViewTiming(statistics.median(seconds), max(seconds))
        for name, seconds in times.items()
    }
    return ViewFigures(
        **timing,
        shapes_seconds=shapes_seconds,
        rounds=len(times["targets"]),
        rounds_during_job=rounds_during_job,
    )
