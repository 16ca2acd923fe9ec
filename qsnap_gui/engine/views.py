"""The reads behind the window's views: each opens its own connection, returns plain data.

The window calls these on its worker threads and never builds SQL or opens a connection itself;
anything that reads for it lives here (or in the engine module these delegate to).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Engine

from qsnap_gui.domain.codec import Shape
from qsnap_gui.domain.jobs import CancelFlag
from qsnap_gui.engine import backfill, inspection, offers_view, targets
from qsnap_gui.engine.backfill import Category, ScanProgressFn, ScanResult, TargetChoice
from qsnap_gui.engine.inspection import InspectReport, PopulationPage, SearchPage
from qsnap_gui.engine.targets import TargetRow
from qsnap_gui.store import queries
from qsnap_gui.store.db import Database
from qsnap_gui.store.queries import BandRow, ShapeCounts, TraitGroupRef, with_shapes

__all__ = [
    "BandRow",
    "ShapeCounts",
    "TraitGroupRef",
    "band_population_page",
    "band_shape_counts",
    "inspect_me_file",
    "list_bands",
    "list_targets",
    "scan_backfill",
    "search_me_files",
    "target_choices",
    "target_missing",
    "with_shapes",
]


def _engine(source: Database | Engine) -> Engine:
    return source.engine if isinstance(source, Database) else source


def list_targets(source: Database | Engine, *, coverage: bool = False) -> list[TargetRow]:
    """The targets list as the window first shows it: populations from the unique index at
    once; without ``coverage`` the NULL snapshots are left to :func:`target_missing`."""
    with _engine(source).connect() as conn:
        return targets.list_targets(conn, coverage=coverage)


def target_missing(source: Database | Engine) -> dict[int, int]:
    """NULL snapshots per target: the targets list's coverage, read after its populations."""
    with _engine(source).connect() as conn:
        return targets.target_missing(conn)


def list_bands(source: Database | Engine, target_id: int, *, shapes: bool = True) -> list[BandRow]:
    """The band table; without ``shapes`` only what the indexes count, at once."""
    with _engine(source).connect() as conn:
        return queries.list_bands(conn, target_id, shapes=shapes)


def band_shape_counts(source: Database | Engine, band_ids: list[int]) -> dict[int, ShapeCounts]:
    """The per-shape counts the fast band table leaves out (reads every snapshot)."""
    with _engine(source).connect() as conn:
        return queries.band_shape_counts(conn, band_ids)


def inspect_me_file(source: Database | Engine, me_file_id: int) -> InspectReport:
    with _engine(source).connect() as conn:
        return inspection.inspect_me_file(conn, me_file_id)


def search_me_files(
    source: Database | Engine, query: str, *, limit: int, offset: int = 0
) -> SearchPage:
    with _engine(source).connect() as conn:
        return inspection.search_me_files(conn, query, limit=limit, offset=offset)


def band_population_page(
    source: Database | Engine,
    band_id: int,
    shape: Shape | None,
    *,
    after_id: int,
    limit: int,
) -> PopulationPage:
    with _engine(source).connect() as conn:
        return inspection.band_population_page(conn, band_id, shape, after_id=after_id, limit=limit)


def target_choices(source: Database | Engine) -> list[TargetChoice]:
    with _engine(source).connect() as conn:
        return backfill.list_target_choices(conn)


def scan_backfill(
    source: Database | Engine,
    target_ids: list[int] | None,
    include: Iterable[Category | str],
    *,
    cancel: CancelFlag | None = None,
    progress: ScanProgressFn | None = None,
) -> ScanResult:
    with _engine(source).connect() as conn:
        return backfill.scan(conn, target_ids, include, cancel=cancel, progress=progress)


def offers_section(
    source: Database | Engine,
    me_file_id: int,
    *,
    kinds: Iterable[str] = offers_view.KINDS,
    offset: int = 0,
) -> offers_view.OffersSection | None:
    """A me_file's newest offers and ad events (None where this database has none to read)."""
    with _engine(source).connect() as conn:
        return offers_view.offers_section(conn, me_file_id, kinds=kinds, offset=offset)
