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
    from qsnap_gui.tools.bench import bench_scale, render, to_json

    if args.repeat < 1 or any(n < 100 for n in args.scale):
        raise UsageError("--repeat must be at least 1 and each --scale at least 100")
    results = [bench_scale(n, args.repeat, say, keep=args.keep) for n in args.scale]
    print(json.dumps(to_json(results), indent=2) if args.json else render(results))
    return 0
