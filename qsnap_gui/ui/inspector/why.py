"""The "Why it matched" panel: the band's groups the me_file satisfies, and what keeps it out of
the next band inward."""

from __future__ import annotations

from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import QTreeWidget, QTreeWidgetItem

from qsnap_gui.domain.shapes import Colour
from qsnap_gui.engine.inspection import GroupCheck, Membership, value_text
from qsnap_gui.ui.inspector.common import PANEL_ITEMS, clip


def _spanned(
    tree: QTreeWidget,
    parent: QTreeWidgetItem | None,
    text: str,
    *,
    font: QFont | None = None,
    color: str | None = None,
) -> QTreeWidgetItem:
    item = QTreeWidgetItem([text])
    if font is not None:
        item.setFont(0, font)
    if color is not None:
        item.setForeground(0, QColor(color))
    if parent is None:
        tree.addTopLevelItem(item)
    else:
        parent.addChild(item)
    item.setFirstColumnSpanned(True)
    return item


def _trait_rows(tree: QTreeWidget, parent: QTreeWidgetItem, rows: list[tuple[str, int, str]]):
    for name, trait_id, value in rows[:PANEL_ITEMS]:
        parent.addChild(QTreeWidgetItem([name, str(trait_id), value]))
    if len(rows) > PANEL_ITEMS:
        _spanned(tree, parent, f"… {len(rows) - PANEL_ITEMS:,} more", color=Colour.GREY)


def _group_item(tree: QTreeWidget, parent: QTreeWidgetItem, g: GroupCheck, *, ok: bool):
    mark = "✓" if ok else "✗"
    color = Colour.GREEN if ok else Colour.RED
    return _spanned(tree, parent, f"{mark} {g.title}  (group {g.group_id})", color=color)


def _name(trait_name: str | None) -> str:
    return trait_name if trait_name is not None else "(deleted trait)"


def _matched(tree: QTreeWidget, m: Membership, bold: QFont) -> None:
    top = _spanned(
        tree,
        None,
        f"In {m.band_label} (band {m.band_id}): satisfies "
        f"{len(m.satisfied_groups)} of {len(m.groups)} groups",
        font=bold,
    )
    if not m.groups:
        state = "has tags" if m.has_tags else "has NO tags"
        _spanned(
            tree,
            top,
            f"No trait groups: every me_file with at least one tag matches (this one {state})",
        )
    for g in m.groups:
        item = _group_item(tree, top, g, ok=g.satisfied)
        if g.satisfied:
            rows = [
                (_name(t.trait_name), t.trait_id, clip(value_text(t.tag_value), 80)) for t in g.tags
            ]
        else:
            _spanned(tree, item, "no longer satisfied (the population is out of date); any of:")
            rows = [(_name(t.trait_name), t.trait_id, "") for t in g.traits]
        _trait_rows(tree, item, rows)
        item.setExpanded(item.childCount() <= 20)
    top.setExpanded(True)


def _next_band(tree: QTreeWidget, m: Membership, bold: QFont) -> None:
    missing = m.next_band_missing_groups
    if missing is None:
        nxt = _spanned(tree, None, "Next band inward: none", font=bold)
        _spanned(
            tree,
            nxt,
            f"This is the {m.band_label}, the innermost band"
            if m.is_innermost
            else "No band inside this one",
        )
        nxt.setExpanded(True)
        return
    total = len(m.next_band_groups or ())
    nxt = _spanned(
        tree,
        None,
        f"Not in {m.next_band_label} (band {m.next_band_id}): "
        f"fails {len(missing)} of {total} groups",
        font=bold,
    )
    if not missing:
        _spanned(tree, nxt, "It satisfies every group now: the population is out of date")
    for g in missing:
        item = _group_item(tree, nxt, g, ok=False)
        if g.traits:
            _spanned(tree, item, "would be satisfied by any of:", color=Colour.GREY)
            _trait_rows(tree, item, [(_name(t.trait_name), t.trait_id, "") for t in g.traits])
        else:
            _spanned(tree, item, "this group has no traits: no me_file can satisfy it")
        item.setExpanded(item.childCount() <= 20)
    nxt.setExpanded(True)


def fill_why(tree: QTreeWidget, m: Membership) -> None:
    tree.clear()
    bold = QFont(tree.font())
    bold.setBold(True)
    if not m.band_exists:
        _spanned(
            tree, None, f"Band {m.band_id} no longer exists: an orphan population row", font=bold
        )
        return
    _matched(tree, m, bold)
    _next_band(tree, m, bold)
