"""The me_file inspector (Qt-free): why a me_file sits in each band, and is the snapshot still true.

Population rows without a band, of a deleted band, or of a deleted me_file are orphans: shown,
never written. A me_file without a me_files row can still be inspected while it has tags or
population rows (the application keeps such me_file ids as members).

The report is loaded in ``load`` (its dataclasses in ``report``), compared with a rebuilt
snapshot in ``stale``, searched and paged in ``search``, rewritten one row at a time in
``resnapshot`` and put in words in ``render``.
"""

from qsnap_gui.engine.inspection.load import (
    BAND_ORDER_SQL,
    BandPos,
    inspect_me_file,
    parse_snapshot,
)
from qsnap_gui.engine.inspection.render import (
    membership_json_text,
    pretty_json,
    render_text,
    tree_lines,
    value_text,
    why_lines,
)
from qsnap_gui.engine.inspection.report import (
    GroupCheck,
    InspectReport,
    Membership,
    StaleCheck,
    TagChange,
    TagDiff,
    TagRef,
    TraitRef,
)
from qsnap_gui.engine.inspection.resnapshot import resnapshot_row
from qsnap_gui.engine.inspection.search import (
    MeFileHit,
    PopulationPage,
    PopulationRow,
    SearchPage,
    band_population_page,
    escape_like,
    search_me_files,
)
from qsnap_gui.engine.inspection.stale import compare_snapshot

__all__ = [
    "BAND_ORDER_SQL",
    "BandPos",
    "GroupCheck",
    "InspectReport",
    "MeFileHit",
    "Membership",
    "PopulationPage",
    "PopulationRow",
    "SearchPage",
    "StaleCheck",
    "TagChange",
    "TagDiff",
    "TagRef",
    "TraitRef",
    "band_population_page",
    "compare_snapshot",
    "escape_like",
    "inspect_me_file",
    "membership_json_text",
    "parse_snapshot",
    "pretty_json",
    "render_text",
    "resnapshot_row",
    "search_me_files",
    "tree_lines",
    "value_text",
    "why_lines",
]
