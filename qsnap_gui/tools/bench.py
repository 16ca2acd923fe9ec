"""``qsnap bench``: the snapshot engine against a port of the original worker and the write floor.

Runs only on scratch databases it creates in the embedded server. Each strategy runs in its own
process (so its peak RSS is its own) over the same rows, starting from NULL snapshots after
VACUUM ANALYZE and CHECKPOINT.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field

from sqlalchemy import Engine, text

from qsnap_gui.domain.codec import TagRow, TraitInfo, band_metadata, build_snapshot
from qsnap_gui.engine.executors import CONNECTIONS_PER_JOB
from qsnap_gui.engine.flows import snapshot_bands
from qsnap_gui.store.db import is_complete_demo, make_engine
from qsnap_gui.store.dsn import normalize_url
from qsnap_gui.store.schema import has_qlarius_tables
from qsnap_gui.tools.demo import DemoSpec, generate_demo

BENCH_TARGET = 1
BATCH = 500


@dataclass
class StrategyFigures:
    seconds: float
    rows: int
    peak_rss_mb: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


@dataclass
class ViewFigures:
    """Median seconds of the views' reads, taken while a snapshot job of the target runs."""

    targets_seconds: float  # the window's targets list
    cli_targets_seconds: float  # `qsnap targets`, orphans included
    bands_seconds: float  # the band table's population and missing counts
    shapes_seconds: float  # the per-shape counts the window reads in the background
    during_job: bool  # whether the job was still running when the last read ended


@dataclass
class ScaleFigures:
    scale: int
    populations: int
    generator_seconds: float | None
    strategies: dict[str, StrategyFigures] = field(default_factory=dict)
    populate_seconds: float | None = None
    populate_rss_mb: float | None = None
    snapshots_equal: bool | None = None
    mismatches: int = 0
    views: ViewFigures | None = None

    def ratio(self, a: str, b: str) -> float | None:
        if a in self.strategies and b in self.strategies and self.strategies[b].seconds:
            return self.strategies[a].seconds / self.strategies[b].seconds
        return None


# --- the strategies (each run in a child process by ``python -m qsnap_gui.tools.bench``) ------------


def _null_rows(engine: Engine, band_id: int) -> list[tuple[int, int]]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text(
                    "select id, me_file_id from target_populations "
                    "where target_band_id = :b and matching_tags_snapshot is null order by id"
                ),
                {"b": band_id},
            )
        ]


def baseline_band(engine: Engine, band_id: int) -> int:
    """The original worker: every tag of the batch's me_files, built in Python, row-by-row writes."""
    with engine.connect() as conn:
        meta_rows = conn.execute(
            text(
                "select t.id, t.trait_name, t.display_order, t.parent_trait_id "
                "from target_band_trait_groups g join trait_group_traits gt "
                "on gt.trait_group_id = g.trait_group_id join traits t on t.id = gt.trait_id "
                "where g.target_band_id = :b"
            ),
            {"b": band_id},
        ).all()
        parent_ids = {r[3] for r in meta_rows if r[3] is not None}
        parent_rows = conn.execute(
            text(
                "select id, trait_name, display_order, parent_trait_id from traits where id = any(:p)"
            ),
            {"p": list(parent_ids)},
        ).all()
    band_traits = {r[0]: TraitInfo(*r) for r in [*meta_rows, *parent_rows]}
    metadata = band_metadata([r[0] for r in meta_rows], band_traits)
    rows = _null_rows(engine, band_id)
    written = 0
    for start in range(0, len(rows), BATCH):
        chunk = rows[start : start + BATCH]
        with engine.begin() as conn:
            conn.execute(text("set local synchronous_commit = off"))
            tags = conn.execute(
                text(
                    "select mt.id, mt.me_file_id, mt.trait_id, mt.tag_value, t.trait_name, "
                    "t.display_order, t.parent_trait_id from me_file_tags mt "
                    "join traits t on t.id = mt.trait_id where mt.me_file_id = any(:m)"
                ),
                {"m": [m for _, m in chunk]},
            ).all()
            per_me: dict[int, list[TagRow]] = defaultdict(list)
            traits = dict(band_traits)
            for tag_id, me_id, trait_id, value, name, order, parent in tags:
                per_me[me_id].append(TagRow(tag_id, trait_id, value))
                traits.setdefault(trait_id, TraitInfo(trait_id, name, order, parent))
            params = [
                {"s": json.dumps(build_snapshot(per_me[m], metadata, traits)), "i": pid}
                for pid, m in chunk
            ]
            conn.execute(
                text(
                    "update target_populations set matching_tags_snapshot = cast(:s as jsonb), "
                    "updated_at = date_trunc('second', now() at time zone 'UTC') where id = :i"
                ),
                params,
            )
            written += len(params)
    return written


def floor_band(engine: Engine, band_id: int) -> int:
    """The same batches writing a constant: what the writes alone cost."""
    rows = _null_rows(engine, band_id)
    for start in range(0, len(rows), BATCH):
        with engine.begin() as conn:
            conn.execute(text("set local synchronous_commit = off"))
            conn.execute(
                text(
                    "update target_populations set matching_tags_snapshot = '{\"tags\": []}', "
                    "updated_at = date_trunc('second', now() at time zone 'UTC') "
                    "where id = any(:ids)"
                ),
                {"ids": [pid for pid, _ in rows[start : start + BATCH]]},
            )
    return len(rows)


def qsnap_bands(engine: Engine, band_ids: list[int]) -> int:
    """The engine exactly as ``qsnap snapshot --target`` runs it: same defaults, bands in parallel."""
    return sum(r.rows_written for r in snapshot_bands(engine, band_ids))


def run_strategy(strategy: str, url: str, band_ids: list[int]) -> tuple[int, float]:
    """Rows written and seconds, timed after imports and the first connection."""
    # room for every band's job at once (a relayed band holds three connections)
    engine = make_engine(normalize_url(url), pool_size=len(band_ids) * CONNECTIONS_PER_JOB)
    with engine.connect() as conn:
        conn.execute(text("select 1"))
    started = time.perf_counter()
    if strategy == "qsnap":
        written = qsnap_bands(engine, band_ids)
    else:
        work = {"baseline": baseline_band, "floor": floor_band}[strategy]
        totals: list[int] = []
        threads = [
            threading.Thread(target=lambda b=b: totals.append(work(engine, b))) for b in band_ids
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        written = sum(totals)
    seconds = time.perf_counter() - started
    engine.dispose()
    return written, seconds


# --- the driver ----------------------------------------------------------------------------


def _timed_child(args: list[str]) -> tuple[float, float]:
    """Run a child process: its seconds (its own timing line if it prints one, else wall time)
    and its own peak RSS in MB (from wait4, so no other process is counted)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args[2:6])} failed: {err.read().strip()[-400:]}")
        timing = [line for line in out.read().splitlines() if line.startswith("seconds ")]
    seconds = float(timing[-1].split()[1]) if timing else wall
    return seconds, usage.ru_maxrss / 1024


def _prepare(engine: Engine, null_snapshots: bool = True) -> None:
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
        conn.execute(text("checkpoint"))


def scratch_name(scale: int) -> str:
    return f"qsnap_bench_{scale}"


def bench_database(scale: int, say) -> tuple[str, float | None]:
    """A scratch database of the embedded server holding the benchmark world at this scale."""
    from qsnap_gui.store.embedded import create_database

    url = create_database(scratch_name(scale))
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
            say(f"scale {scale}: generating the benchmark world")
            started = time.perf_counter()
            generate_demo(
                engine,
                DemoSpec(me_files=scale, seed=1, targets=1, bands_per_target=3, broad=True),
                reset=True,
            )
            seconds = time.perf_counter() - started
    finally:
        engine.dispose()
    return url, seconds


def _autovacuum(engine: Engine, enabled: bool) -> None:
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


def bench_scale(scale: int, repeat: int, say, keep: bool = False) -> ScaleFigures:
    """Time one scale; its scratch database is dropped afterwards unless ``keep`` (a kept
    world is reused by the next bench at the same scale, without generating it again)."""
    try:
        url, generator_seconds = bench_database(scale, say)
        engine = make_engine(normalize_url(url), pool_size=4)
        try:
            _autovacuum(engine, False)
            return _bench_world(engine, url, scale, generator_seconds, repeat, say)
        finally:
            _autovacuum(engine, True)
            engine.dispose()
    finally:
        if not keep:
            from qsnap_gui.store.embedded import drop_database

            drop_database(scratch_name(scale))
            say(
                f"scale {scale}: dropped {scratch_name(scale)} (--keep keeps it for the next bench)"
            )


def _bench_world(
    engine: Engine, url: str, scale: int, generator_seconds: float | None, repeat: int, say
) -> ScaleFigures:
    with engine.connect() as conn:
        band_ids = list(
            conn.execute(
                text("select id from target_bands where target_id = :t order by id"),
                {"t": BENCH_TARGET},
            ).scalars()
        )
        populations = conn.execute(
            text("select count(*) from target_populations where target_band_id = any(:b)"),
            {"b": band_ids},
        ).scalar_one()
    figures = ScaleFigures(scale, populations, generator_seconds)
    py = sys.executable
    commands = {
        "baseline": [
            py,
            "-m",
            "qsnap_gui.tools.bench",
            "--strategy",
            "baseline",
            url,
            *map(str, band_ids),
        ],
        # timed like the others, after imports and the first connection: the engine exactly
        # as `qsnap snapshot --target` runs it
        "qsnap": [
            py,
            "-m",
            "qsnap_gui.tools.bench",
            "--strategy",
            "qsnap",
            url,
            *map(str, band_ids),
        ],
        "floor": [
            py,
            "-m",
            "qsnap_gui.tools.bench",
            "--strategy",
            "floor",
            url,
            *map(str, band_ids),
        ],
    }
    for name, command in commands.items():
        runs = []
        for r in range(repeat):
            _prepare(engine)
            seconds, rss = _timed_child(command)
            runs.append((seconds, rss))
            say(f"scale {scale}: {name} run {r + 1}: {seconds:.2f}s, {rss:.0f} MB")
            if name == "baseline" and r == repeat - 1:
                with engine.begin() as conn:
                    conn.execute(text("drop table if exists qsnap_bench_baseline"))
                    conn.execute(
                        text(
                            "create table qsnap_bench_baseline as select id, "
                            "matching_tags_snapshot as snap from target_populations "
                            "where target_band_id = any(:b)"
                        ),
                        {"b": band_ids},
                    )
            if name == "qsnap" and r == repeat - 1:
                with engine.connect() as conn:
                    figures.mismatches = conn.execute(
                        text(
                            "select count(*) from target_populations tp full join "
                            "qsnap_bench_baseline b on b.id = tp.id "
                            "where (tp.target_band_id = any(:b) or b.id is not null) "
                            "and tp.matching_tags_snapshot is distinct from b.snap"
                        ),
                        {"b": band_ids},
                    ).scalar_one()
                figures.snapshots_equal = figures.mismatches == 0
        figures.strategies[name] = StrategyFigures(
            statistics.median(s for s, _ in runs), populations, max(m for _, m in runs)
        )
    with engine.begin() as conn:
        conn.execute(text("drop table if exists qsnap_bench_baseline"))
        conn.execute(
            text(
                "delete from target_populations where target_band_id in "
                "(select id from target_bands where target_id = :t)"
            ),
            {"t": BENCH_TARGET},
        )
    _prepare(engine, null_snapshots=False)
    seconds, rss = _timed_child(
        [py, "-m", "qsnap_gui.cli", "--dsn", url, "populate", str(BENCH_TARGET)]
    )
    figures.populate_seconds, figures.populate_rss_mb = seconds, rss
    say(f"scale {scale}: populate {seconds:.2f}s")
    figures.views = views_during_job(engine, url, band_ids)
    say(f"scale {scale}: views timed while a snapshot job ran")
    return figures


def _median_seconds(read, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        read()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def views_during_job(engine: Engine, url: str, band_ids: list[int]) -> ViewFigures:
    """Time the window's and the command line's views while `qsnap snapshot --target` fills
    every snapshot of the benchmark target in another process."""
    from qsnap_gui.engine import targets, views
    from qsnap_gui.store import queries

    _prepare(engine)
    with engine.connect() as conn:
        before = sum(c.missing for c in queries.band_counts(conn, band_ids).values())
    job = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qsnap_gui.cli",
            "--dsn",
            url,
            "snapshot",
            "--target",
            str(BENCH_TARGET),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while job.poll() is None and time.monotonic() < deadline:  # until its first commit
            with engine.connect() as conn:
                now = sum(c.missing for c in queries.band_counts(conn, band_ids).values())
            if now < before:
                break
            time.sleep(0.05)

        def cli_targets() -> None:
            with engine.connect() as conn:
                targets.list_targets(conn, orphans=True)

        figures = ViewFigures(
            targets_seconds=_median_seconds(lambda: views.list_targets(engine)),
            cli_targets_seconds=_median_seconds(cli_targets),
            bands_seconds=_median_seconds(
                lambda: views.list_bands(engine, BENCH_TARGET, shapes=False)
            ),
            shapes_seconds=_median_seconds(lambda: views.band_shape_counts(engine, band_ids)),
            during_job=job.poll() is None,
        )
    finally:
        job.wait()
    return figures


def render(results: list[ScaleFigures]) -> str:
    lines = [
        f"{'scale':>9} {'rows':>9} {'strategy':<9} {'seconds':>8} {'rows/s':>9} {'peak RSS':>9}"
    ]
    for f in results:
        for name, s in f.strategies.items():
            lines.append(
                f"{f.scale:>9,} {f.populations:>9,} {name:<9} {s.seconds:>8.2f} "
                f"{s.rows_per_second:>9,.0f} {s.peak_rss_mb:>6.0f} MB"
            )
        speedup, floor = f.ratio("baseline", "qsnap"), f.ratio("qsnap", "floor")
        lines.append(
            f"{'':>9} qsnap is {speedup:.1f}x faster than the baseline and "
            f"{floor:.2f}x the write floor; snapshots "
            + (
                "jsonb-equal for every row"
                if f.snapshots_equal
                else f"DIFFER in {f.mismatches} rows"
            )
        )
        gen = f"{f.generator_seconds:.1f}s" if f.generator_seconds is not None else "reused"
        lines.append(
            f"{'':>9} qsnap populate (membership + diff + snapshots): {f.populate_seconds:.2f}s, "
            f"{f.populate_rss_mb:.0f} MB; generator: {gen}"
        )
        if f.views is not None:
            v = f.views
            lines.append(
                f"{'':>9} views {'during' if v.during_job else 'after'} a snapshot job: "
                f"targets list {v.targets_seconds:.2f}s (command line, orphans counted: "
                f"{v.cli_targets_seconds:.2f}s), band table {v.bands_seconds:.2f}s, "
                f"per-shape counts {v.shapes_seconds:.2f}s in the background"
            )
    return "\n".join(lines)


def to_json(results: list[ScaleFigures]) -> list[dict]:
    out = []
    for f in results:
        item = asdict(f)
        for name, s in f.strategies.items():
            item["strategies"][name]["rows_per_second"] = round(s.rows_per_second)
        item["qsnap_speedup_over_baseline"] = f.ratio("baseline", "qsnap")
        item["qsnap_over_write_floor"] = f.ratio("qsnap", "floor")
        out.append(item)
    return out


def main(argv: list[str] | None = None) -> int:
    """Child entry point: ``python -m qsnap_gui.tools.bench --strategy NAME URL BAND...``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[0] != "--strategy":
        print(
            "usage: python -m qsnap_gui.tools.bench --strategy baseline|qsnap|floor URL BAND...",
            file=sys.stderr,
        )
        return 2
    written, seconds = run_strategy(args[1], args[2], [int(b) for b in args[3:]])
    print(f"rows {written}")
    print(f"seconds {seconds:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
