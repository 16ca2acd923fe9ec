"""A me_file's offers or ad events, newest first, page by page, for the inspector's section."""

from __future__ import annotations

from typing import NamedTuple

from PySide6.QtCore import QModelIndex, Qt
from PySide6.QtGui import QColor

from qsnap_gui.domain.shapes import Colour, shape_info
from qsnap_gui.engine.offers_view import KIND_WORDS, CarrierRow, Verdict
from qsnap_gui.ui import format as fmt
from qsnap_gui.ui.models.base import DISPLAY, ID_ROLE, Index, TableModel
from qsnap_gui.ui.palette import GREY, shape_color


class VerdictInfo(NamedTuple):
    label: str
    colour: str


VERDICTS: dict[Verdict, VerdictInfo] = {
    Verdict.SAME: VerdictInfo("Same tags", Colour.GREEN),
    Verdict.SAME_TAGS: VerdictInfo("Same tags (form differs)", Colour.GREEN),
    Verdict.CHANGED: VerdictInfo("Tags changed", Colour.AMBER),
    Verdict.SNAPSHOT_MISSING: VerdictInfo("No snapshot", Colour.BLUE),
    Verdict.SNAPSHOT_BROKEN: VerdictInfo("Broken snapshot", Colour.RED),
    Verdict.NO_BAND: VerdictInfo("No band", Colour.GREY),
    Verdict.POPULATION_GONE: VerdictInfo("Population gone", Colour.GREY),
    Verdict.POPULATION_SNAPSHOT_MISSING: VerdictInfo("Population not snapshotted", Colour.BLUE),
    Verdict.POPULATION_SNAPSHOT_BROKEN: VerdictInfo("Population snapshot broken", Colour.RED),
}


def verdict_info(verdict: Verdict | str) -> VerdictInfo:
    try:
        return VERDICTS[Verdict(verdict)]
    except ValueError:
        return VerdictInfo(str(verdict), Colour.GREY)


def band_text(r: CarrierRow) -> str:
    return "(no band)" if r.band_id is None else r.band_label


def where_text(r: CarrierRow) -> str:
    """Every id of the row, for its tooltip and the line above its snapshot."""
    parts = [f"{KIND_WORDS[r.kind]} {r.id}"]
    if r.offer_id is not None:
        parts.append(f"offer {r.offer_id}")
    if r.campaign_id is not None:
        parts.append(f"campaign {r.campaign_id}")
    if r.target_id is not None:
        title = r.target_title if r.target_title is not None else "(untitled)"
        parts.append(f"{title} (#{r.target_id})")
    parts.append(band_text(r) + (f" (band {r.band_id})" if r.band_id is not None else ""))
    parts.append(f"created {fmt.stamp(r.created_at)}")
    return " · ".join(parts)


class OffersModel(TableModel):
    """Rows of one kind; ``append`` adds a page below the rows shown."""

    COLUMNS = ("Created (UTC)", "Campaign", "Band", "Shape", "Compared")
    CREATED, CAMPAIGN, BAND, SHAPE, COMPARED = range(5)
    TIPS = {
        1: "The campaign the offer belongs to",
        4: "This snapshot against the one its population (same me_file and band) holds now",
    }

    @property
    def rows(self) -> list[CarrierRow]:
        return self._rows

    def clear(self) -> None:
        self._replace([], False)

    def append(self, rows: tuple[CarrierRow, ...]) -> None:
        if not rows:
            return
        first = len(self._rows)
        self.beginInsertRows(QModelIndex(), first, first + len(rows) - 1)
        self._rows.extend(rows)
        self.endInsertRows()

    def data(self, index: Index, role: int = DISPLAY):
        r: CarrierRow | None = self.row_at(index)
        if r is None:
            return None
        col = index.column()
        if role == DISPLAY:
            return self._text(r, col)
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == self.SHAPE:
                return shape_info(r.shape).tip
            if col == self.COMPARED:
                return r.comparison.line
            return where_text(r)
        if role == Qt.ItemDataRole.ForegroundRole:
            if col == self.SHAPE:
                return shape_color(r.shape)
            if col == self.COMPARED:
                return QColor(verdict_info(r.comparison.verdict).colour)
            if col == self.BAND and (r.band_id is None or r.target_id is None):
                return GREY
        if role == ID_ROLE:
            return r.id
        return None

    def _text(self, r: CarrierRow, col: int) -> str | None:
        if col == self.CREATED:
            return fmt.when(r.created_at)
        if col == self.CAMPAIGN:
            return "—" if r.campaign_id is None else str(r.campaign_id)
        if col == self.BAND:
            return band_text(r)
        if col == self.SHAPE:
            return shape_info(r.shape).label
        if col == self.COMPARED:
            return verdict_info(r.comparison.verdict).label
        return None
