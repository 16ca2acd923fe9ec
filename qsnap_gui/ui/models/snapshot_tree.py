"""The snapshot tree: a plain-Python node tree made from the codec's ``Decoded`` (built off the
GUI thread), and the QAbstractItemModel that shows it in a QTreeView.

Columns: name / value, trait id, display order. Parent traits hold their child tags in stored
order. A value that is not a tree (never snapshotted, an empty object, an invalid value, an
envelope with no tags) is one message row; an invalid value adds a row with its raw text.
Very large snapshots are cut after ``MAX_CHILD_NODES`` child rows with a "… more" row (the Raw
JSON tab and the CSV export hold everything), and long texts are clipped for display.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from PySide6.QtCore import QAbstractItemModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QBrush, QFont

from qsnap_gui.domain.codec import ChildTag, Decoded, ParentTrait, Shape
from qsnap_gui.ui.models.base import guard_model
from qsnap_gui.ui.palette import BLANK_BG, BLANK_FG, NOTE_FG

MAX_CHILD_NODES = 20_000
DISPLAY_CHARS = 300
TOOLTIP_CHARS = 2_000
RAW_ROW_CHARS = 2_000
NO_VALUE = "(no value)"

COLUMNS = ("Name / value", "Trait id", "Display order")

NodeKindRole = Qt.ItemDataRole.UserRole + 1
BlankRole = Qt.ItemDataRole.UserRole + 2


class NodeKind(StrEnum):
    ROOT = "root"
    PARENT = "parent"
    CHILD = "child"
    MESSAGE = "message"
    RAW = "raw"
    MORE = "more"


@dataclass(eq=False)
class Node:
    kind: NodeKind
    text: str
    trait_id: int | None = None
    display_order: int | None = None
    blank: bool = False
    tooltip: str | None = None
    parent: Node | None = field(default=None, repr=False)
    children: list[Node] = field(default_factory=list, repr=False)
    row: int = 0
    uid: int = 0

    def add(self, child: Node) -> Node:
        child.parent = self
        child.row = len(self.children)
        self.children.append(child)
        return child


MESSAGES = {
    Shape.MISSING: "Never snapshotted",
    Shape.EMPTY_OBJECT: "Empty object {}: says nothing (repair rebuilds it)",
}
EMPTY_TREE = "Checked: no matching tags"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def build_nodes(
    decoded: Decoded,
    raw_text: str | None = None,
    *,
    limit: int = MAX_CHILD_NODES,
    parent_names: Mapping[int, str] | None = None,
) -> Node:
    """The node tree of one decoded snapshot (plain Python: safe to build on any thread).

    ``parent_names`` names parents the snapshot stores without a name (the legacy flat form),
    marked as read from the traits now.
    """
    root = Node(NodeKind.ROOT, "")
    shape = decoded.shape
    if shape in MESSAGES:
        root.add(Node(NodeKind.MESSAGE, MESSAGES[shape]))
    elif shape is Shape.INVALID:
        message = f"Invalid snapshot: {decoded.error}"
        root.add(Node(NodeKind.MESSAGE, _clip(message, DISPLAY_CHARS), tooltip=message))
        if raw_text is not None:
            root.add(
                Node(
                    NodeKind.RAW,
                    "Raw: " + _clip(raw_text, DISPLAY_CHARS),
                    tooltip=_clip(raw_text, RAW_ROW_CHARS),
                )
            )
    elif not decoded.parents:
        root.add(Node(NodeKind.MESSAGE, EMPTY_TREE))
    else:
        shown = _add_tags(root, decoded, limit, parent_names or {})
        total = sum(len(p.children) for p in decoded.parents)
        if shown < total:
            root.add(
                Node(
                    NodeKind.MORE,
                    f"… {total - shown:,} more tags not shown (see Raw JSON or save as CSV)",
                )
            )
    return root


def _parent_node(p: ParentTrait, parent_names: Mapping[int, str]) -> Node:
    if p.name is not None:
        name = tip = p.name
    else:
        now = parent_names.get(p.trait_id)
        name = f"{now}  (name not stored)" if now else f"(parent {p.trait_id})"
        tip = "the legacy flat form stores no parent names" + (
            f"; {now!r} is the trait's name now" if now else ""
        )
    return Node(
        NodeKind.PARENT,
        _clip(name, DISPLAY_CHARS),
        p.trait_id,
        p.display_order,
        tooltip=_clip(tip, TOOLTIP_CHARS),
    )


def _child_node(c: ChildTag, *, legacy: bool) -> Node:
    if c.is_blank:
        tip = "this tag has no value (null or empty): repair rebuilds it"
    elif legacy:
        tip = f"{c.value} (the legacy flat form stores the trait name, not a value)"
    else:
        tip = c.value
    return Node(
        NodeKind.CHILD,
        _clip(NO_VALUE if c.is_blank else c.value, DISPLAY_CHARS),
        c.trait_id,
        c.display_order,
        blank=c.is_blank,
        tooltip=_clip(tip, TOOLTIP_CHARS),
    )


def _add_tags(root: Node, decoded: Decoded, limit: int, parent_names: Mapping[int, str]) -> int:
    """Parents and their tags under ``root``, up to ``limit`` tags; returns the tags added."""
    legacy = decoded.shape is Shape.LEGACY_FLAT
    shown = 0
    for p in decoded.parents:
        if shown >= limit:
            break
        parent = root.add(_parent_node(p, parent_names))
        for c in p.children:
            if shown >= limit:
                break
            parent.add(_child_node(c, legacy=legacy))
            shown += 1
    return shown


def count_nodes(root: Node) -> int:
    return sum(1 + count_nodes(c) for c in root.children)


@guard_model
class SnapshotTreeModel(QAbstractItemModel):
    """Read-only model over a ``Node`` tree; never raises on any index it is handed."""

    def __init__(self, root: Node | None = None, parent=None) -> None:
        super().__init__(parent)
        self._nodes: list[Node] = []
        self._root = Node(NodeKind.ROOT, "")
        self.set_root(root or Node(NodeKind.ROOT, ""))

    # -- content ---------------------------------------------------------------------------

    def set_root(self, root: Node) -> None:
        self.beginResetModel()
        self._root = root
        self._nodes = []
        stack = [root]
        while stack:  # iterative: any depth of node tree is safe
            node = stack.pop()
            node.uid = len(self._nodes)
            self._nodes.append(node)
            stack.extend(reversed(node.children))
        self.endResetModel()

    @classmethod
    def from_decoded(cls, decoded: Decoded, raw_text: str | None = None, parent=None):
        return cls(build_nodes(decoded, raw_text), parent)

    @property
    def root(self) -> Node:
        return self._root

    def node(self, index: QModelIndex | QPersistentModelIndex) -> Node:
        if not index.isValid():
            return self._root
        uid = index.internalId()
        if 0 <= uid < len(self._nodes):
            return self._nodes[uid]
        return self._root

    def parent_indexes(self) -> list[QModelIndex]:
        """Indexes of the top-level rows that have children (to expand them)."""
        return [self.createIndex(n.row, 0, n.uid) for n in self._root.children if n.children]

    # -- QAbstractItemModel ----------------------------------------------------------------

    def index(self, row, column, parent=QModelIndex()):  # noqa: B008
        if column < 0 or column >= len(COLUMNS) or row < 0:
            return QModelIndex()
        if parent.isValid() and parent.column() != 0:
            return QModelIndex()
        node = self.node(parent)
        if row >= len(node.children):
            return QModelIndex()
        return self.createIndex(row, column, node.children[row].uid)

    def parent(self, index=QModelIndex()):  # noqa: B008
        if not index.isValid():
            return QModelIndex()
        up = self.node(index).parent
        if up is None or up is self._root:
            return QModelIndex()
        return self.createIndex(up.row, 0, up.uid)

    def rowCount(self, parent=QModelIndex()):  # noqa: B008, N802
        if parent.isValid() and parent.column() != 0:
            return 0
        return len(self.node(parent).children)

    def columnCount(self, parent=QModelIndex()):  # noqa: B008, N802
        return len(COLUMNS)

    def hasChildren(self, parent=QModelIndex()):  # noqa: B008, N802
        return self.rowCount(parent) > 0

    def flags(self, index):
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if (
            orientation == Qt.Orientation.Horizontal
            and role == Qt.ItemDataRole.DisplayRole
            and 0 <= section < len(COLUMNS)
        ):
            return COLUMNS[section]
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        node = self.node(index)
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if column == 0:
                return node.text
            value = node.trait_id if column == 1 else node.display_order
            return "" if value is None else str(value)
        if role == Qt.ItemDataRole.ToolTipRole:
            return node.tooltip if column == 0 else None
        if role == Qt.ItemDataRole.ForegroundRole:
            if node.blank:
                return QBrush(BLANK_FG)
            if node.kind in (NodeKind.MESSAGE, NodeKind.MORE, NodeKind.RAW):
                return QBrush(NOTE_FG)
            return None
        if role == Qt.ItemDataRole.BackgroundRole:
            return QBrush(BLANK_BG) if node.blank else None
        if role == Qt.ItemDataRole.FontRole:
            if node.kind is NodeKind.PARENT and column == 0:
                font = QFont()
                font.setBold(True)
                return font
            if node.blank or node.kind in (NodeKind.MESSAGE, NodeKind.MORE):
                font = QFont()
                font.setItalic(True)
                return font
            if node.kind is NodeKind.RAW:
                return QFont("monospace")
            return None
        if role == Qt.ItemDataRole.TextAlignmentRole and column > 0:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == NodeKindRole:
            return str(node.kind)
        if role == BlankRole:
            return node.blank
        return None


# --- CSV export -------------------------------------------------------------------------------

CSV_HEADER = (
    "parent_trait_id",
    "parent_name",
    "parent_display_order",
    "trait_id",
    "tag_value",
    "display_order",
    "no_value",
)


def csv_rows(decoded: Decoded) -> Iterable[tuple]:
    """Every child tag of the tree, one row each (none for a value that is not a tree)."""
    for p in decoded.parents:
        for c in p.children:
            yield (
                p.trait_id,
                "" if p.name is None else p.name,
                "" if p.display_order is None else p.display_order,
                c.trait_id,
                "" if c.value is None else c.value,
                "" if c.display_order is None else c.display_order,
                "yes" if c.is_blank else "",
            )


def write_csv(path: str | Path, decoded: Decoded) -> int:
    """Write the tree as CSV (UTF-8 with a BOM, so spreadsheets read emoji); returns rows."""
    count = 0
    with open(path, "w", encoding="utf-8-sig", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_HEADER)
        for row in csv_rows(decoded):
            writer.writerow(row)
            count += 1
    return count
