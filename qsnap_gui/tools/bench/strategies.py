"""The strategies the bench times, each in a child process of its own (``python -m
qsnap_gui.tools.bench --strategy NAME BAND...``, the URL in QSNAP_BENCH_URL so that a password
never shows in a process list): the original worker's port, qsnap, the write floor (a
constant), and the floor writing each row's own snapshot, precomputed."""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from collections import defaultdict

from sqlalchemy import Engine, text

from qsnap_gui.domain.codec import TagRow, TraitInfo, band_metadata, build_snapshot
from qsnap_gui.engine.executors import CONNECTIONS_PER_JOB
from qsnap_gui.engine.flows import snapshot_bands
from qsnap_gui.engine.snapshot_sql import SPLIT_ROWS, WRITERS
from qsnap_gui.store.db import make_engine
from qsnap_gui.store.dsn import normalize_url

BATCH = 500
URL_VARIABLE = "QSNAP_BENCH_URL"
STRATEGIES = ("baseline", "qsnap", "floor", "floor_json")
# the port's snapshots, kept by the bench once the port has run: what every other writer is
# compared with, and what the JSON floor writes
BASELINE_TABLE = "qsnap_bench_baseline"


def _null_rows(engine: Engine, band_ids: list[int]) -> list[tuple[int, int]]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text(
                    "select id, me_file_id from target_populations "
                    "where target_band_id = any(:b) and matching_tags_snapshot is null "
                    "and me_file_id is not null order by id"
                ),
                {"b": band_ids},
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
    rows = _null_rows(engine, [band_id])
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


def floor_writers(rows: int) -> int:
    """As many connections as qsnap writes these rows with: WRITERS for a large stream."""
    return WRITERS if rows >= SPLIT_ROWS else 1


def floor_stream(
    engine: Engine, band_ids: list[int], writers: int | None = None, same_json: bool = False
) -> int:
    """What the writes alone cost: the bands' rows as one stream of batches in id order (as
    qsnap streams a target's bands), each batch one transaction writing a constant, through
    as many connections at once as qsnap writes with.

    ``same_json`` writes each row's own snapshot from BASELINE_TABLE instead: the snapshot
    GIN index takes an entry per key and value, so writing real snapshots costs more than
    writing one constant with a single key, whoever computes them."""
    rows = _null_rows(engine, band_ids)
    batches: queue.SimpleQueue[list[int] | None] = queue.SimpleQueue()
    for start in range(0, len(rows), BATCH):
        batches.put([pid for pid, _ in rows[start : start + BATCH]])
    count = writers or floor_writers(len(rows))
    failures: list[BaseException] = []
    now = "date_trunc('second', now() at time zone 'UTC')"
    write = text(
        f"update target_populations tp set matching_tags_snapshot = b.snap, updated_at = {now} "
        f"from {BASELINE_TABLE} b where b.id = tp.id and tp.id = any(:ids) and b.id = any(:ids)"
        if same_json
        else "update target_populations set matching_tags_snapshot = '{\"tags\": []}', "
        f"updated_at = {now} where id = any(:ids)"
    )

    def writer() -> None:
        try:
            while (ids := batches.get()) is not None:
                with engine.begin() as conn:
                    conn.execute(text("set local synchronous_commit = off"))
                    conn.execute(write, {"ids": ids})
        except BaseException as exc:  # reported by the caller, never lost with its thread
            failures.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(count)]
    for _ in threads:
        batches.put(None)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]
    return len(rows)


def floor_band(engine: Engine, band_id: int) -> int:
    """One band's floor, through the connections qsnap would write it with."""
    return floor_stream(engine, [band_id])


def qsnap_bands(engine: Engine, band_ids: list[int]) -> int:
    """The engine exactly as ``qsnap snapshot --target`` runs it: same defaults, bands together."""
    return sum(r.rows_written for r in snapshot_bands(engine, band_ids))


def run_strategy(strategy: str, url: str, band_ids: list[int]) -> tuple[int, float, int | None]:
    """Rows written, seconds (timed after imports and the first connection) and, for the
    floor, the connections it wrote through."""
    # room for every band's job at once (a relayed band holds three connections)
    engine = make_engine(normalize_url(url), pool_size=len(band_ids) * CONNECTIONS_PER_JOB)
    with engine.connect() as conn:
        conn.execute(text("select 1"))
    connections = None
    started = time.perf_counter()
    if strategy == "qsnap":
        written = qsnap_bands(engine, band_ids)
    elif strategy in ("floor", "floor_json"):
        connections = floor_writers(len(_null_rows(engine, band_ids)))
        started = time.perf_counter()
        written = floor_stream(engine, band_ids, connections, strategy == "floor_json")
    else:
        totals: list[int] = []
        threads = [
            threading.Thread(target=lambda b=b: totals.append(baseline_band(engine, b)))
            for b in band_ids
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        written = sum(totals)
    seconds = time.perf_counter() - started
    engine.dispose()
    return written, seconds, connections


def main(argv: list[str] | None = None) -> int:
    """Child entry point: ``python -m qsnap_gui.tools.bench --strategy NAME BAND...``."""
    args = sys.argv[1:] if argv is None else argv
    url = os.environ.get(URL_VARIABLE)
    if len(args) < 3 or args[0] != "--strategy" or args[1] not in STRATEGIES or not url:
        print(
            f"usage: {URL_VARIABLE}=URL python -m qsnap_gui.tools.bench "
            f"--strategy {'|'.join(STRATEGIES)} BAND...",
            file=sys.stderr,
        )
        return 2
    written, seconds, connections = run_strategy(args[1], url, [int(b) for b in args[2:]])
    print(f"rows {written}")
    print(f"seconds {seconds:.4f}")
    if connections is not None:
        print(f"connections {connections}")
    return 0
