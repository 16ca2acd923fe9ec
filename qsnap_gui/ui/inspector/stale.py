"""The "Stale check" panel: is the stored snapshot still what a re-snapshot would write?"""

from __future__ import annotations

from typing import NamedTuple

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QLabel,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from qsnap_gui.domain.codec import decode
from qsnap_gui.domain.shapes import Colour
from qsnap_gui.engine.inspection import Membership, StaleCheck, value_text
from qsnap_gui.ui.inspector.common import PANEL_ITEMS, clip, fit_headers

ADDED, REMOVED, CHANGED = "+ added", "− removed", "~ changed"
KIND_COLORS = {ADDED: Colour.GREEN, REMOVED: Colour.RED, CHANGED: Colour.AMBER}
VALUE_COLUMN = 3


class Badge(NamedTuple):
    text: str
    color: str
    tip: str


class StalePanel(QWidget):
    """The Stale check tab; its verdict also goes to a badge the inspector shows beside the
    shape's, in view whichever tab is open."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.list = QTreeWidget()
        self.list.setColumnCount(4)
        self.list.setHeaderLabels(["Change", "Parent trait", "Trait id", "Value"])
        self.list.setRootIsDecorated(False)
        self.list.setUniformRowHeights(True)
        self.list.setAlternatingRowColors(True)
        fit_headers(self.list.header(), stretch=VALUE_COLUMN)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.status)
        layout.addWidget(self.list, 1)

    def clear(self) -> None:
        self.list.clear()
        self.status.setText("")

    def show_check(self, m: Membership) -> Badge:
        s = m.stale
        self.list.clear()
        if not s.comparable:
            self._verdict(clip(s.note or "Not comparable", 400), Colour.GREY)
            return Badge("Not comparable", Colour.GREY, s.note or "")
        if s.up_to_date:
            self._verdict("Up to date: the stored snapshot matches the tags now.", Colour.GREEN)
            return Badge(
                "Up to date", Colour.GREEN, "The stored snapshot matches the me_file's tags now"
            )
        counts = f"{len(s.added)} added, {len(s.removed)} removed, {len(s.changed)} changed"
        if not (s.added or s.removed or s.changed):
            self._verdict(
                f"Same tags, yet not what a re-snapshot writes now: {s.note}.", Colour.AMBER
            )
            return Badge("Same tags", Colour.AMBER, s.note or "")
        self._verdict(f"Stale: {counts}." + (f"\n{s.note}" if s.note else ""), Colour.AMBER)
        self._list(m, s)
        return Badge("Stale", Colour.AMBER, counts)

    def _verdict(self, text: str, color: str) -> None:
        self.status.setText(text)
        self.status.setStyleSheet(f"color: {color};")
        self._show_list(False)

    def _show_list(self, visible: bool) -> None:
        self.list.setVisible(visible)

    def _list(self, m: Membership, s: StaleCheck) -> None:
        names: dict[int, str] = {}
        for p in m.decoded.parents:
            if p.name:
                names.setdefault(p.trait_id, p.name)
        if s.rebuilt is not None:
            for p in decode(s.rebuilt).parents:
                if p.name:
                    names[p.trait_id] = p.name

        def parent_text(pid: int) -> str:
            return f"{names.get(pid, '(parent)')} ({pid})"

        for kind, pid, tid, value in _rows(s):
            item = QTreeWidgetItem(
                [kind, parent_text(pid) if pid else "", str(tid) if tid else "", value]
            )
            item.setForeground(0, QColor(KIND_COLORS[kind]))
            item.setToolTip(VALUE_COLUMN, value)
            self.list.addTopLevelItem(item)
        self._show_list(True)


def _rows(s: StaleCheck) -> list[tuple[str, int, int, str]]:
    """(change, parent id, trait id, value) per listed difference, each list cut at PANEL_ITEMS."""
    rows: list[tuple[str, int, int, str]] = []
    for kind, items in ((ADDED, s.added), (REMOVED, s.removed)):
        rows.extend(
            (kind, d.parent_id, d.trait_id, clip(value_text(d.value), 120))
            for d in items[:PANEL_ITEMS]
        )
        if len(items) > PANEL_ITEMS:
            rows.append((kind, 0, 0, f"… {len(items) - PANEL_ITEMS:,} more"))
    rows.extend(
        (
            CHANGED,
            d.parent_id,
            d.trait_id,
            f"{clip(value_text(d.stored_value), 60)} → {clip(value_text(d.current_value), 60)}",
        )
        for d in s.changed[:PANEL_ITEMS]
    )
    if len(s.changed) > PANEL_ITEMS:
        rows.append((CHANGED, 0, 0, f"… {len(s.changed) - PANEL_ITEMS:,} more"))
    return rows
