"""``qsnap demo`` and ``qsnap bench``."""

from __future__ import annotations

import argparse
import json

from qsnap_gui.cli.output import say
from qsnap_gui.domain.errors import UsageError
from qsnap_gui.store.db import (
    Database,
)


def cmd_demo(args: argparse.Namespace, db: Database) -> int:
    from qsnap_gui.tools.demo import DemoSpec, generate_demo

    if args.me_files < 1:
        raise UsageError("--me-files must be at least 1")
    generate_demo(
        db.engine,
        DemoSpec(me_files=args.me_files, seed=args.seed, edge_cases=True),
        reset=args.reset,
        progress=say,
    )
    return 0


def cmd_bench(args: argparse.Namespace, db: Database | None) -> int:
    from qsnap_gui.tools.bench import WorldOptions, bench_scale, render, to_json
    from qsnap_gui.tools.bench.many_targets import bench_many_targets
    from qsnap_gui.tools.bench.render import many_to_json, render_many
    from qsnap_gui.tools.bench.servers import bench_server
    from qsnap_gui.tools.demo import check_tags_per_me_file

    if args.repeat < 1 or any(n < 100 for n in args.scale):
        raise UsageError("--repeat must be at least 1 and each --scale at least 100")
    check_tags_per_me_file(args.tags_per_me_file, args.bands)
    if args.many_targets is not None and args.many_targets < 1:
        raise UsageError("--many-targets must be at least 1")
    # only a --dsn given to bench itself names its server: never QSNAP_DATABASE_URL or
    # DATABASE_URL, which name the operator's Qlarius database
    dsn = getattr(args, "dsn", None)
    if dsn and args.stock_server:
        raise UsageError("--dsn and --stock-server name two servers: give one")
    if args.keep and args.stock_server:
        raise UsageError("--keep cannot keep a world on --stock-server: that server is deleted")
    with bench_server(dsn, args.stock_server) as server:
        if args.many_targets is not None:
            many = bench_many_targets(server, args.many_targets, say, keep=args.keep)
            print(json.dumps(many_to_json(many), indent=2) if args.json else render_many(many))
            return 0 if many.rows_equal and many.left_to_fix == 0 else 1
        world = WorldOptions(args.tags_per_me_file, args.bands)
        results = [
            bench_scale(server, n, args.repeat, say, keep=args.keep, world=world)
            for n in args.scale
        ]
    print(json.dumps(to_json(results), indent=2) if args.json else render(results))
    wrong = [r for r in results if r.snapshots_equal is False or (r.stale and not r.stale.equal)]
    return 1 if wrong else 0
