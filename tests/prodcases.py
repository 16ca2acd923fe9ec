"""A small database shaped like production, holding every edge case DOMAIN.md names.

Production's column types and nullability (the demo schema), a few dozen me_files of the demo
catalogue, and the generator's edge cases: NULL titles and statuses, orphan populations,
NULL and '' tag values, tied display orders and tied rings, links to deleted groups and
traits, tags and populations of deleted me_files, JSON null and '{}' snapshots, offers and ad
events left NULL. The result does not read as a qsnap demo database.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text

from qsnap_gui.store.db import open_database
from qsnap_gui.tools.demo import DemoSpec, generate_demo

PROD_SPEC = DemoSpec(
    me_files=24,
    seed=11,
    zips=12,
    targets=3,
    bands_per_target=2,
    offers_per_mille=100,
    edge_cases=True,
)


@dataclass(frozen=True)
class ProductionCases:
    """Where each case lives: ``cases[name]`` are ids, described in the generator
    (tools/demo/edge.py: insert_edge_catalogue, populate_edge and insert_edge_offers)."""

    url: str
    cases: dict[str, tuple[int, ...]]

    @property
    def edge_target(self) -> int:
        """The target with a NULL title whose bands hold the ties and odd links."""
        return self.cases["untitled_target"][0]

    def one(self, name: str) -> int:
        (only,) = self.cases[name]
        return only


def build_production_cases(url: str) -> ProductionCases:
    """Fill the empty database at ``url`` and say where each case is."""
    db = open_database(url, check_schema=False)
    try:
        stats = generate_demo(db.engine, PROD_SPEC)
        with db.engine.begin() as conn:
            conn.execute(text("comment on table targets is null"))
            conn.execute(text("comment on table target_populations is null"))
    finally:
        db.dispose()
    return ProductionCases(url, stats.cases)
