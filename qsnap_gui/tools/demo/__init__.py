"""The demo data set: deterministic for a seed, shaped like a real Qlarius database.

Catalogue rows (traits, groups, targets, bands) are made in Python from ``random.Random(seed)``;
the bulk (me_files, tags, populations, snapshots) is made in PostgreSQL with INSERT … SELECT
over generate_series and a seeded hash, so a million me_files never pass through Python.
"""

from qsnap_gui.tools.demo.catalogue import BASE_TIME
from qsnap_gui.tools.demo.draws import check_tags_per_me_file, tag_draws
from qsnap_gui.tools.demo.edge import EDGE_ME_FILES
from qsnap_gui.tools.demo.generate import ensure_demo_database, generate_demo, seed_demo
from qsnap_gui.tools.demo.populations import SHAPED
from qsnap_gui.tools.demo.spec import DemoSpec, DemoStats, ProgressFn

__all__ = [
    "BASE_TIME",
    "EDGE_ME_FILES",
    "SHAPED",
    "DemoSpec",
    "DemoStats",
    "ProgressFn",
    "check_tags_per_me_file",
    "ensure_demo_database",
    "generate_demo",
    "seed_demo",
    "tag_draws",
]
