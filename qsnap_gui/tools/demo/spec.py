"""What a demo is asked for and what it reports, and the pieces every step shares: the
seeded hash of the set-based inserts, audit columns and the parents made by the catalogue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class DemoSpec:
    me_files: int = 10_000
    seed: int = 42
    zips: int = 3000
    targets: int | None = None
    bands_per_target: int | None = None
    # benchmark worlds: target 1's outer band asks for any zip, so every me_file is a member
    broad: bool = False
    # offers made from this many per mille of each band's populations (and from its first row)
    offers_per_mille: int = 30
    # the production cases of DOMAIN.md (NULLs, orphans, ties, odd links), on a target of their own
    edge_cases: bool = False
    # benchmark worlds: the mean number of tags per me_file (None: the demo's own mix, ~39)
    tags_per_me_file: int | None = None
    # benchmark worlds: "equal" gives target 1 three bands of a third of the me_files each
    # (needs bands_per_target=3); "skewed" is the demo's, where one band holds most rows
    bands: str = "skewed"


@dataclass(frozen=True)
class DemoStats:
    me_files: int
    tags: int
    targets: int
    bands: int
    populations: int
    seconds: float
    offers: int = 0
    ad_events: int = 0
    # edge case name -> the ids that hold it (see insert_edge_catalogue and populate_edge)
    cases: dict[str, tuple[int, ...]] = field(default_factory=dict)


ProgressFn = Callable[[str], None]


def h(seed: int, salt: int, expr: str = "m.id") -> str:
    """SQL for a deterministic pseudo-random int in [0, 2^31) from (seed, salt, expr)."""
    return f"(hashint8extended({expr}, {seed * 7919 + salt}) & 2147483647)"


def audit(ts: datetime) -> dict[str, object]:
    return {"added_date": ts, "modified_date": ts, "added_by": 1, "modified_by": 1}


@dataclass(frozen=True)
class Parent:
    id: int
    name: str
    kind: str
    children: tuple[int, ...]
    values: tuple[str, ...]
