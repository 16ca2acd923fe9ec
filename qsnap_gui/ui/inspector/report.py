"""One me_file's report as the inspector shows it, prepared off the GUI thread."""

from __future__ import annotations

from dataclasses import dataclass

from qsnap_gui.domain.codec import Shape, decode
from qsnap_gui.engine import views
from qsnap_gui.engine.inspection import InspectReport, membership_json_text
from qsnap_gui.store.db import Database
from qsnap_gui.ui.models.snapshot_tree import Node, build_nodes, count_nodes


@dataclass(frozen=True)
class MembershipView:
    """What the GUI needs for one membership: its tree and JSON, built on a worker."""

    nodes: Node
    node_count: int
    json_text: str


@dataclass(frozen=True)
class LoadedReport:
    report: InspectReport
    views: dict[int, MembershipView]


def load_report(database: Database, me_file_id: int) -> LoadedReport:
    report = views.inspect_me_file(database, me_file_id)
    shown = {}
    for m in report.memberships:
        names = {}
        if m.shape == Shape.LEGACY_FLAT and m.stale.rebuilt is not None:
            names = {p.trait_id: p.name for p in decode(m.stale.rebuilt).parents if p.name}
        root = build_nodes(m.decoded, m.raw_text, parent_names=names)
        shown[m.population_id] = MembershipView(root, count_nodes(root), membership_json_text(m))
    return LoadedReport(report, shown)
