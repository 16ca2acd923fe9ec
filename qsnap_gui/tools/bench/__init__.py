"""``qsnap bench``: the snapshot engine against a port of the original worker and the write floor,
and the commands operators run, timed on scratch databases the bench creates and drops.

Where: the embedded server (default), a server the operator names (``--dsn``), or a throwaway
server with PostgreSQL's default settings (``--stock-server``). Each strategy and each qsnap
command runs in its own process, so its peak RSS is its own.
"""

from qsnap_gui.tools.bench.figures import (
    CommandFigures,
    ManyTargetsFigures,
    PreviewFigures,
    ScaleFigures,
    StaleFigures,
    StrategyFigures,
    ViewFigures,
    ViewTiming,
    WorldOptions,
)
from qsnap_gui.tools.bench.render import many_to_json, render, render_many, to_json
from qsnap_gui.tools.bench.runs import (
    bench_scale,
    preview_against_membership,
    stale_repair,
    views_during_job,
)
from qsnap_gui.tools.bench.strategies import (
    baseline_band,
    floor_band,
    floor_stream,
    main,
    qsnap_bands,
)
from qsnap_gui.tools.bench.worlds import BENCH_TARGET, autovacuum, scratch_name

__all__ = [
    "BENCH_TARGET",
    "CommandFigures",
    "ManyTargetsFigures",
    "PreviewFigures",
    "ScaleFigures",
    "StaleFigures",
    "StrategyFigures",
    "ViewFigures",
    "ViewTiming",
    "WorldOptions",
    "autovacuum",
    "baseline_band",
    "bench_scale",
    "floor_band",
    "floor_stream",
    "main",
    "many_to_json",
    "preview_against_membership",
    "qsnap_bands",
    "render",
    "render_many",
    "scratch_name",
    "stale_repair",
    "to_json",
    "views_during_job",
]
