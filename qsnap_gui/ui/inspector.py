"""The me_file inspector: why a me_file is in each band, and is what we stored still true.

Three widgets for the main window to host:

* ``InspectorWidget(database)``: memberships, snapshot tree, raw JSON, why-matched, stale check,
  re-snapshot of one row, copy JSON and save-as-CSV. ``open_me_file(id, band_id=None)``.
* ``SearchField(database)``: the toolbar search (me_file id or display-name prefix, paged
  results); its ``focus_action`` carries Ctrl+F. Emits ``meFileActivated(int)``.
* ``BandPopulationView(database, band_id)``: a band's rows page by page, filterable by shape;
  a double-click emits ``meFileActivated(int)``.

Every database call runs on a ``TaskRunner`` pool (QRunnables whose result signal lives on the
GUI thread) and hands back plain dataclasses from ``qsnap_gui.engine.inspection``; no SQL here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPoint,
    Qt,
    Signal,
    Slot,
)
from PySide6.QtGui import QAction, QColor, QFont, QFontDatabase, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QStackedWidget,
    QTableView,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QTreeView,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from qsnap_gui.domain.codec import Shape, decode
from qsnap_gui.engine.inspection import (
    GroupCheck,
    InspectReport,
    MeFileHit,
    Membership,
    PopulationPage,
    PopulationRow,
    SearchPage,
    band_population_page,
    inspect_me_file,
    membership_json_text,
    resnapshot_row,
    search_me_files,
    value_text,
)
from qsnap_gui.store.db import SNAPSHOT_PRIVILEGES, Database, missing_privileges
from qsnap_gui.ui.snapshot_tree import (
    Node,
    NodeKind,
    SnapshotTreeModel,
    build_nodes,
    count_nodes,
    write_csv,
)
from qsnap_gui.ui.tasks import TaskRunner

RAW_DISPLAY_CHARS = 1_000_000
PANEL_ITEMS = 200  # items listed per group / per stale list before "… N more"

GREEN = "#15803d"
RED = "#b91c1c"
AMBER = "#b45309"
GREY = "#64748b"

SHAPE_BADGES = {  # shape -> (text, background, tooltip)
    Shape.MISSING: ("Never snapshotted", GREY, "NULL: never snapshotted"),
    Shape.ENVELOPE: ("Envelope", GREEN, 'The current form, {"tags": [...]}, well formed'),
    Shape.BARE_ARRAY: (
        "Bare array",
        AMBER,
        "The nested arrays without the envelope: readable, repair rewrites it",
    ),
    Shape.LEGACY_FLAT: (
        "Legacy flat",
        AMBER,
        "An old writer's flat list: no values, no nesting; repair rebuilds it",
    ),
    Shape.EMPTY_OBJECT: (
        "Empty {}",
        AMBER,
        "{}: looks filled but says nothing; repair rebuilds it",
    ),
    Shape.NULL_VALUES: (
        "Null values",
        AMBER,
        "Some tags have a null or empty value (shown as “(no value)”); repair rebuilds it",
    ),
    Shape.INVALID: ("Invalid", RED, "None of the known shapes: shown raw; repair rebuilds it"),
}


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def _fixed_font() -> QFont:
    return QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)


def _pill(text: str = "", color: str = GREY) -> QLabel:
    label = QLabel(text)
    _paint_pill(label, text, color)
    return label


def _paint_pill(label: QLabel, text: str, color: str) -> None:
    label.setText(text)
    label.setStyleSheet(
        f"QLabel {{ background: {color}; color: white; border-radius: 8px; padding: 1px 8px;"
        " font-weight: 600; }"
    )


def _clip(text: str, n: int = 200) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# --- work done on the pool (plain Python in, plain Python out) -------------------------------


@dataclass(frozen=True)
class MembershipView:
    """What the GUI needs for one membership, prepared off the GUI thread."""

    nodes: Node
    node_count: int
    json_text: str


@dataclass(frozen=True)
class LoadedReport:
    report: InspectReport
    views: dict[int, MembershipView]


def load_report(database: Database, me_file_id: int) -> LoadedReport:
    with database.engine.connect() as conn:
        report = inspect_me_file(conn, me_file_id)
    views = {}
    for m in report.memberships:
        names = {}
        if m.shape == Shape.LEGACY_FLAT and m.stale.rebuilt is not None:
            names = {p.trait_id: p.name for p in decode(m.stale.rebuilt).parents if p.name}
        root = build_nodes(m.decoded, m.raw_text, parent_names=names)
        views[m.population_id] = MembershipView(root, count_nodes(root), membership_json_text(m))
    return LoadedReport(report, views)


# --- the inspector --------------------------------------------------------------------------


class InspectorWidget(QWidget):
    """Memberships of one me_file and, for the chosen one, tree, raw JSON, why and stale."""

    reportLoaded = Signal(object)  # LoadedReport  # noqa: N815
    loadFailed = Signal(str)  # noqa: N815
    snapshotWritten = Signal(int)  # population id  # noqa: N815
    resnapshotFailed = Signal(str)  # noqa: N815

    MEMBERSHIP_COLUMNS = ("Target", "Band", "Band id", "Population", "Shape", "Updated")

    def __init__(self, database: Database, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("inspector")
        self.database = database
        self.runner = TaskRunner(self)
        self.runner.secret = database.url
        self.loaded: LoadedReport | None = None
        self._me_file_id: int | None = None
        self._want_population: int | None = None
        self._want_band: int | None = None
        self._can_write = not missing_privileges(database, *SNAPSHOT_PRIVILEGES)
        self._build()
        self._show_membership(None)

    # -- layout ----------------------------------------------------------------------------

    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(6, 6, 6, 6)

        head = QHBoxLayout()
        self.title = QLabel("No me_file open")
        self.title.setObjectName("paneTitle")
        font = QFont(self.title.font())
        font.setPointSizeF(font.pointSizeF() + 2)
        font.setBold(True)
        self.title.setFont(font)
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.subtitle = QLabel("")
        self.subtitle.setObjectName("paneSubtitle")
        self.refresh_button = QPushButton("Reload")
        self.refresh_button.setToolTip("Read this me_file again")
        self.refresh_button.clicked.connect(self.refresh)
        self.refresh_button.setEnabled(False)
        self.copy_button = QPushButton("Copy JSON")
        self.copy_button.setToolTip("Copy the stored snapshot of this membership as JSON")
        self.copy_button.clicked.connect(self.copy_json)
        self.csv_button = QPushButton("Save tree as CSV…")
        self.csv_button.clicked.connect(lambda: self.save_tree_csv())
        titles = QVBoxLayout()
        titles.addWidget(self.title)
        titles.addWidget(self.subtitle)
        head.addLayout(titles, 1)
        head.addWidget(self.refresh_button)
        head.addWidget(self.copy_button)
        head.addWidget(self.csv_button)
        outer.addLayout(head)

        self.memberships = QTableWidget(0, len(self.MEMBERSHIP_COLUMNS))
        self.memberships.setHorizontalHeaderLabels(self.MEMBERSHIP_COLUMNS)
        self.memberships.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.memberships.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.memberships.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.memberships.verticalHeader().hide()
        self.memberships.setAlternatingRowColors(True)
        header = self.memberships.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in range(1, len(self.MEMBERSHIP_COLUMNS)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.memberships.itemSelectionChanged.connect(self._membership_selected)

        # snapshot: badges + never-snapshotted bar + tree / raw JSON
        self.shape_badge = _pill()
        self.stale_badge = _pill()
        self.snapshot_info = QLabel()
        self.snapshot_info.setWordWrap(True)
        badges = QHBoxLayout()
        badges.addWidget(self.shape_badge)
        badges.addWidget(self.stale_badge)
        badges.addWidget(self.snapshot_info, 1)

        self.never_bar = QFrame()
        never = QHBoxLayout(self.never_bar)
        never.setContentsMargins(0, 0, 0, 0)
        never.addWidget(QLabel("This row was never snapshotted."))
        self.snapshot_now_button = QPushButton("Snapshot this row now")
        self.snapshot_now_button.clicked.connect(self.resnapshot_current)
        never.addWidget(self.snapshot_now_button)
        never.addStretch(1)

        self.tree_model = SnapshotTreeModel(parent=self)
        self.tree = QTreeView()
        self.tree.setModel(self.tree_model)
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(True)
        self.tree.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        theader = self.tree.header()
        theader.setStretchLastSection(False)
        theader.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        theader.setSectionResizeMode(1, QHeaderView.ResizeMode.Fixed)
        theader.setSectionResizeMode(2, QHeaderView.ResizeMode.Fixed)
        metrics = theader.fontMetrics()
        for col, label in ((1, "Trait id"), (2, "Display order")):
            theader.resizeSection(col, max(metrics.horizontalAdvance(label) + 36, 80))

        tree_page = QWidget()
        tree_layout = QVBoxLayout(tree_page)
        tree_layout.setContentsMargins(4, 4, 4, 4)
        tree_layout.addLayout(badges)
        tree_layout.addWidget(self.never_bar)
        tree_layout.addWidget(self.tree, 1)

        self.raw = QPlainTextEdit()
        self.raw.setReadOnly(True)
        self.raw.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse
            | Qt.TextInteractionFlag.TextSelectableByKeyboard
        )
        self.raw.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.raw.setFont(_fixed_font())

        self.tabs = QTabWidget()
        self.tabs.addTab(tree_page, "Snapshot tree")
        self.tabs.addTab(self.raw, "Raw JSON")

        # why matched
        self.why = QTreeWidget()
        self.why.setColumnCount(3)
        self.why.setHeaderLabels(["Group / trait", "Trait id", "Tag value"])
        self.why.setUniformRowHeights(True)
        why_header = self.why.header()
        why_header.setStretchLastSection(True)
        why_box = QGroupBox("Why it matched")
        why_layout = QVBoxLayout(why_box)
        why_layout.addWidget(self.why)

        # stale check
        self.stale_status = QLabel()
        self.stale_status.setWordWrap(True)
        self.stale_list = QTreeWidget()
        self.stale_list.setColumnCount(4)
        self.stale_list.setHeaderLabels(["Change", "Parent trait", "Trait id", "Value"])
        self.stale_list.setRootIsDecorated(False)
        self.stale_list.setUniformRowHeights(True)
        self.resnapshot_button = QPushButton("Re-snapshot this row")
        self.resnapshot_button.setToolTip(
            "Rewrite this population's snapshot from the me_file's tags now (force)"
        )
        self.resnapshot_button.clicked.connect(self.resnapshot_current)
        stale_box = QGroupBox("Stale check")
        stale_layout = QVBoxLayout(stale_box)
        stale_layout.addWidget(self.stale_status)
        stale_layout.addWidget(self.stale_list, 1)
        self._stale_spacer = QWidget()
        stale_layout.addWidget(self._stale_spacer, 1)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.resnapshot_button)
        stale_layout.addLayout(row)
        if not self._can_write:
            tip = "This session may not write snapshots (read-only or missing UPDATE privilege)"
            for button in (self.resnapshot_button, self.snapshot_now_button):
                button.setToolTip(tip)

        side = QSplitter(Qt.Orientation.Vertical)
        side.addWidget(why_box)
        side.addWidget(stale_box)
        side.setStretchFactor(0, 3)
        side.setStretchFactor(1, 2)
        side.setSizes([640, 360])

        lower = QSplitter(Qt.Orientation.Horizontal)
        lower.addWidget(self.tabs)
        lower.addWidget(side)
        lower.setStretchFactor(0, 3)
        lower.setStretchFactor(1, 2)
        lower.setSizes([600, 400])

        self.body = QSplitter(Qt.Orientation.Vertical)
        self.body.addWidget(self.memberships)
        self.body.addWidget(lower)
        self.body.setStretchFactor(0, 1)
        self.body.setStretchFactor(1, 4)
        self._user_sized = False
        self.body.splitterMoved.connect(self._splitter_moved)

        self.placeholder = QLabel(
            "Search a me_file by id or name (Ctrl+F),\nor double-click a row of a band's population."
        )
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setStyleSheet(f"color: {GREY};")
        self.stack = QStackedWidget()
        self.stack.addWidget(self.placeholder)
        self.stack.addWidget(self.body)
        outer.addWidget(self.stack, 1)

        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        outer.addWidget(self.status)

    # -- public API ------------------------------------------------------------------------

    @property
    def report(self) -> InspectReport | None:
        return self.loaded.report if self.loaded else None

    @property
    def me_file_id(self) -> int | None:
        return self._me_file_id

    def current_membership(self) -> Membership | None:
        if self.loaded is None:
            return None
        row = self.memberships.currentRow()
        ms = self.loaded.report.memberships
        return ms[row] if 0 <= row < len(ms) else None

    def is_busy(self) -> bool:
        return self.runner.busy()

    @Slot(int)
    def open_me_file(self, me_file_id: int, band_id: int | None = None) -> None:
        """Load a me_file; with ``band_id``, select its membership of that band."""
        self._me_file_id = int(me_file_id)
        self._want_band = band_id
        self._want_population = None
        self._load()

    @Slot()
    def refresh(self) -> None:
        if self._me_file_id is None:
            return
        current = self.current_membership()
        self._want_population = current.population_id if current else None
        self._want_band = None
        self._load()

    def select_membership(self, population_id: int) -> bool:
        if self.loaded is None:
            return False
        for row, m in enumerate(self.loaded.report.memberships):
            if m.population_id == population_id:
                self.memberships.selectRow(row)
                return True
        return False

    def search_field(self, parent: QWidget | None = None) -> SearchField:
        """A toolbar search field that opens what it finds in this inspector."""
        field = SearchField(self.database, parent)
        field.meFileActivated.connect(self.open_me_file)
        return field

    def population_view(
        self, band_id: int, parent: QWidget | None = None, **options
    ) -> BandPopulationView:
        """A band's population view whose double-click opens the me_file here, on that band.

        ``options`` go to BandPopulationView (``page_size``, ``shape``).
        """
        view = BandPopulationView(self.database, band_id, parent, **options)
        view.meFileActivated.connect(lambda m, b=band_id: self.open_me_file(m, band_id=b))
        return view

    @Slot()
    def copy_json(self) -> None:
        view = self._current_view()
        if view is None:
            return
        QGuiApplication.clipboard().setText(view.json_text)
        self._say(f"Copied {len(view.json_text):,} characters of JSON")

    def save_tree_csv(self, path: str | None = None) -> str | None:
        """Save the chosen snapshot's tree as CSV; asks for a file name when none is given."""
        m = self.current_membership()
        if m is None:
            return None
        if not path:
            suggested = f"me_file_{self.report.me_file_id}_band_{m.band_id}.csv"
            path, _filter = QFileDialog.getSaveFileName(
                self, "Save tree as CSV", suggested, "CSV files (*.csv);;All files (*)"
            )
            if not path:
                return None
        try:
            rows = write_csv(path, m.decoded)
        except OSError as exc:
            self._say(f"Could not save {path}: {exc.strerror or exc}", error=True)
            return None
        self._say(f"Saved {rows:,} tags to {path}")
        return path

    @Slot()
    def resnapshot_current(self) -> None:
        """Force re-snapshot of the chosen population row, then read the me_file again."""
        m = self.current_membership()
        if m is None or not self._can_write:
            return
        population_id = m.population_id
        self._want_population = population_id
        self._set_write_buttons(False)
        self._say(f"Re-snapshotting population {population_id}…")
        self.runner.run(
            "resnapshot",
            lambda: resnapshot_row(self.database.engine, population_id),
            lambda _value, p=population_id: self._resnapshotted(p),
            self._resnapshot_failed,
        )

    # -- loading ---------------------------------------------------------------------------

    def _load(self) -> None:
        me_file_id = self._me_file_id
        self._say(f"Loading me_file {me_file_id}…")
        self.refresh_button.setEnabled(False)
        database = self.database
        self.runner.run(
            "report", lambda: load_report(database, me_file_id), self._loaded, self._failed
        )

    def _loaded(self, loaded: LoadedReport) -> None:
        self.loaded = loaded
        report = loaded.report
        self.refresh_button.setEnabled(True)
        name = report.display_name if report.display_name is not None else "(no name)"
        self.title.setText(f"me_file {report.me_file_id} · {name}")
        n = len(report.memberships)
        self.subtitle.setText(
            f"{report.tag_count:,} tags · {n} membership{'s' if n != 1 else ''}"
            + ("" if n else " — this me_file is in no band of any target")
        )
        self.stack.setCurrentWidget(self.body)
        self._fill_memberships(report)
        self._size_memberships(len(report.memberships))
        want = self._want_population
        row = 0
        for i, m in enumerate(report.memberships):
            if (want is not None and m.population_id == want) or (
                want is None and self._want_band is not None and m.band_id == self._want_band
            ):
                row = i
                break
        if report.memberships:
            self.memberships.selectRow(row)
            self._membership_selected()
        else:
            self._show_membership(None)
        self._say("")
        self.reportLoaded.emit(loaded)

    def _failed(self, message: str) -> None:
        self.refresh_button.setEnabled(self._me_file_id is not None)
        self._say(message, error=True)
        self.loadFailed.emit(message)

    def _resnapshotted(self, population_id: int) -> None:
        self._say(f"Population {population_id} re-snapshotted")
        self.snapshotWritten.emit(population_id)
        self._want_population = population_id
        self._want_band = None
        self._load()

    def _resnapshot_failed(self, message: str) -> None:
        self._set_write_buttons(True)
        self._say(f"Re-snapshot failed: {message}", error=True)
        self.resnapshotFailed.emit(message)

    @Slot(int, int)
    def _splitter_moved(self, _pos: int, _index: int) -> None:
        self._user_sized = True

    def _size_memberships(self, rows: int) -> None:
        """Show every membership row (3 to 8 rows high) unless the operator sized it."""
        if self._user_sized:
            return
        table = self.memberships
        shown = max(3, min(rows, 8))
        want = (
            table.horizontalHeader().height() + shown * table.verticalHeader().defaultSectionSize()
        )
        want += 2 * table.frameWidth() + 2
        total = sum(self.body.sizes()) or self.body.height()
        if total > want:
            self.body.setSizes([want, total - want])

    def _fill_memberships(self, report: InspectReport) -> None:
        table = self.memberships
        table.blockSignals(True)
        table.clearContents()
        table.setRowCount(len(report.memberships))
        for row, m in enumerate(report.memberships):
            target = (
                f"{m.target_title} (#{m.target_id})"
                if m.target_title is not None
                else "(deleted target)"
                if m.target_id is not None
                else "(no target: band deleted)"
            )
            shape = Shape(m.shape)
            text, color, tip = SHAPE_BADGES[shape]
            cells = [
                target,
                m.band_label,
                str(m.band_id),
                str(m.population_id),
                text,
                _when(m.updated_at),
            ]
            for col, value in enumerate(cells):
                item = QTableWidgetItem(value)
                if col in (2, 3):
                    item.setTextAlignment(
                        Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
                    )
                if col == 4:
                    item.setForeground(QColor(color))
                    item.setToolTip(tip)
                table.setItem(row, col, item)
        table.blockSignals(False)

    # -- showing one membership ------------------------------------------------------------

    def _current_view(self) -> MembershipView | None:
        m = self.current_membership()
        if m is None or self.loaded is None:
            return None
        return self.loaded.views.get(m.population_id)

    @Slot()
    def _membership_selected(self) -> None:
        self._show_membership(self.current_membership())

    def _show_membership(self, m: Membership | None) -> None:
        has = m is not None
        for w in (self.copy_button, self.csv_button):
            w.setEnabled(has)
        if m is None:
            self.tree_model.set_root(_empty_root())
            self.raw.setPlainText("")
            self.why.clear()
            self.stale_list.clear()
            self.stale_status.setText("")
            self.shape_badge.hide()
            self.stale_badge.hide()
            self.snapshot_info.setText("")
            self.never_bar.hide()
            self._set_write_buttons(False)
            return
        view = self.loaded.views[m.population_id]
        shape = Shape(m.shape)
        text, color, tip = SHAPE_BADGES[shape]
        _paint_pill(self.shape_badge, text, color)
        self.shape_badge.setToolTip(tip)
        self.shape_badge.show()
        self.never_bar.setVisible(shape is Shape.MISSING)
        self.csv_button.setEnabled(bool(m.decoded.parents))
        info = f"{m.band_label} · band {m.band_id} · population row {m.population_id}"
        info += f" · updated {_when(m.updated_at)}"
        if shape is Shape.INVALID:
            info += f"\n{_clip(m.decoded.error or '', 400)}"
        self.snapshot_info.setText(info)

        self.tree_model.set_root(view.nodes)
        for index in self.tree_model.parent_indexes():
            self.tree.expand(index)

        text_ = view.json_text if m.raw_text is not None else "null"
        if len(text_) > RAW_DISPLAY_CHARS:
            text_ = (
                text_[:RAW_DISPLAY_CHARS]
                + f"\n\n… clipped at {RAW_DISPLAY_CHARS:,} of {len(view.json_text):,} characters;"
                " Copy JSON copies all of it"
            )
        self.raw.setPlainText(text_)
        self._fill_why(m)
        self._fill_stale(m)
        self._set_write_buttons(True)

    def _set_write_buttons(self, enabled: bool) -> None:
        on = enabled and self._can_write and self.current_membership() is not None
        self.resnapshot_button.setEnabled(on)
        self.snapshot_now_button.setEnabled(on)

    def _fill_why(self, m: Membership) -> None:
        tree = self.why
        tree.clear()
        bold = QFont(tree.font())
        bold.setBold(True)

        def spanned(parent, text: str, *, font: QFont | None = None, color: str | None = None):
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

        def trait_rows(parent, rows: list[tuple[str, int, str]]) -> None:
            for name, trait_id, value in rows[:PANEL_ITEMS]:
                parent.addChild(QTreeWidgetItem([name, str(trait_id), value]))
            if len(rows) > PANEL_ITEMS:
                spanned(parent, f"… {len(rows) - PANEL_ITEMS:,} more", color=GREY)

        def group_item(parent, g: GroupCheck, *, ok: bool):
            mark = "✓" if ok else "✗"
            return spanned(
                parent, f"{mark} {g.title}  (group {g.group_id})", color=GREEN if ok else RED
            )

        def name(trait_name: str | None) -> str:
            return trait_name if trait_name is not None else "(deleted trait)"

        if not m.band_exists:
            spanned(None, f"Band {m.band_id} no longer exists: an orphan population row", font=bold)
            return
        top = spanned(
            None,
            f"In {m.band_label} (band {m.band_id}): satisfies "
            f"{len(m.satisfied_groups)} of {len(m.groups)} groups",
            font=bold,
        )
        if not m.groups:
            state = "has tags" if m.has_tags else "has NO tags"
            spanned(
                top,
                f"No trait groups: every me_file with at least one tag matches (this one {state})",
            )
        for g in m.groups:
            item = group_item(top, g, ok=g.satisfied)
            if g.satisfied:
                trait_rows(
                    item,
                    [
                        (name(t.trait_name), t.trait_id, _clip(value_text(t.tag_value), 80))
                        for t in g.tags
                    ],
                )
            else:
                spanned(item, "no longer satisfied (the population is out of date); any of:")
                trait_rows(item, [(name(t.trait_name), t.trait_id, "") for t in g.traits])
            item.setExpanded(item.childCount() <= 20)
        top.setExpanded(True)

        missing = m.next_band_missing_groups
        if missing is None:
            nxt = spanned(None, "Next band inward: none", font=bold)
            spanned(
                nxt,
                f"This is the {m.band_label}, the innermost band"
                if m.is_innermost
                else "No band inside this one",
            )
        else:
            total = len(m.next_band_groups or ())
            nxt = spanned(
                None,
                f"Not in {m.next_band_label} (band {m.next_band_id}): "
                f"fails {len(missing)} of {total} groups",
                font=bold,
            )
            if not missing:
                spanned(nxt, "It satisfies every group now: the population is out of date")
            for g in missing:
                item = group_item(nxt, g, ok=False)
                if g.traits:
                    spanned(item, "would be satisfied by any of:", color=GREY)
                    trait_rows(item, [(name(t.trait_name), t.trait_id, "") for t in g.traits])
                else:
                    spanned(item, "this group has no traits: no me_file can satisfy it")
                item.setExpanded(item.childCount() <= 20)
        nxt.setExpanded(True)
        tree.resizeColumnToContents(1)
        tree.setColumnWidth(0, max(tree.columnWidth(0), 240))

    def _stale_list_visible(self, visible: bool) -> None:
        self.stale_list.setVisible(visible)
        self._stale_spacer.setVisible(not visible)

    def _fill_stale(self, m: Membership) -> None:
        s = m.stale
        self.stale_list.clear()
        if not s.comparable:
            self.stale_status.setText(_clip(s.note or "Not comparable", 400))
            self.stale_status.setStyleSheet(f"color: {GREY};")
            _paint_pill(self.stale_badge, "Not comparable", GREY)
            self.stale_badge.setToolTip(s.note or "")
            self.stale_badge.show()
            self._stale_list_visible(False)
            return
        if s.up_to_date:
            self.stale_status.setText("Up to date: the stored snapshot matches the tags now.")
            self.stale_status.setStyleSheet(f"color: {GREEN};")
            _paint_pill(self.stale_badge, "Up to date", GREEN)
            self.stale_badge.setToolTip("The stored snapshot matches the me_file's tags now")
            self.stale_badge.show()
            self._stale_list_visible(False)
            return
        counts = f"{len(s.added)} added, {len(s.removed)} removed, {len(s.changed)} changed"
        differs = bool(s.added or s.removed or s.changed)
        if differs:
            self.stale_status.setText(f"Stale: {counts}." + (f"\n{s.note}" if s.note else ""))
        else:
            self.stale_status.setText(
                f"Same tags, yet not what a re-snapshot writes now: {s.note}."
            )
        self.stale_status.setStyleSheet(f"color: {AMBER};")
        _paint_pill(self.stale_badge, "Stale" if differs else "Same tags", AMBER)
        self.stale_badge.setToolTip(counts if differs else s.note or "")
        self.stale_badge.show()
        if not differs:
            self._stale_list_visible(False)
            return
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

        colors = {"+ added": GREEN, "− removed": RED, "~ changed": AMBER}
        rows: list[tuple[str, int, int, str]] = []
        for kind, items in (("+ added", s.added), ("− removed", s.removed)):
            rows.extend(
                (kind, d.parent_id, d.trait_id, _clip(value_text(d.value), 120))
                for d in items[:PANEL_ITEMS]
            )
            if len(items) > PANEL_ITEMS:
                rows.append((kind, 0, 0, f"… {len(items) - PANEL_ITEMS:,} more"))
        rows.extend(
            (
                "~ changed",
                d.parent_id,
                d.trait_id,
                f"{_clip(value_text(d.stored_value), 60)} → {_clip(value_text(d.current_value), 60)}",
            )
            for d in s.changed[:PANEL_ITEMS]
        )
        if len(s.changed) > PANEL_ITEMS:
            rows.append(("~ changed", 0, 0, f"… {len(s.changed) - PANEL_ITEMS:,} more"))
        for kind, pid, tid, value in rows:
            item = QTreeWidgetItem(
                [kind, parent_text(pid) if pid else "", str(tid) if tid else "", value]
            )
            item.setForeground(0, QColor(colors[kind]))
            self.stale_list.addTopLevelItem(item)
        for col in range(3):
            self.stale_list.resizeColumnToContents(col)
        self._stale_list_visible(True)

    def _say(self, text: str, *, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet(f"color: {RED};" if error else f"color: {GREY};")


def _empty_root() -> Node:
    return Node(NodeKind.ROOT, "")


# --- search ---------------------------------------------------------------------------------


class SearchField(QWidget):
    """me_file id or display-name prefix; Enter searches, a single hit opens at once.

    Put it in a toolbar and add ``focus_action`` (Ctrl+F) to the window.
    """

    meFileActivated = Signal(int)  # noqa: N815
    resultsShown = Signal(int)  # rows listed  # noqa: N815
    searchFailed = Signal(str)  # noqa: N815

    PAGE = 50
    MORE_ROLE = Qt.ItemDataRole.UserRole + 10

    def __init__(
        self, database: Database, parent: QWidget | None = None, *, page_size: int = PAGE
    ) -> None:
        super().__init__(parent)
        self.database = database
        self.page_size = max(1, int(page_size))
        self.runner = TaskRunner(self)
        self.runner.secret = database.url
        self._query = ""
        self._rows: list[MeFileHit] = []
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.edit = QLineEdit()
        self.edit.setPlaceholderText("me_file id or name…  (Ctrl+F)")
        self.edit.setClearButtonEnabled(True)
        self.edit.setMinimumWidth(220)
        self.edit.setMaximumWidth(360)
        self.edit.returnPressed.connect(lambda: self.search())
        layout.addWidget(self.edit)
        self.setSizePolicy(QSizePolicy.Policy.Maximum, QSizePolicy.Policy.Fixed)

        self.popup = QFrame(self, Qt.WindowType.Popup)
        popup_layout = QVBoxLayout(self.popup)
        popup_layout.setContentsMargins(1, 1, 1, 1)
        self.results = QListWidget()
        self.results.setUniformItemSizes(True)
        self.results.itemActivated.connect(self._activate_item)
        self.results.itemClicked.connect(self._activate_item)
        popup_layout.addWidget(self.results)
        self.popup.resize(360, 300)

        self.focus_action = QAction("Find me_file", self)
        self.focus_action.setShortcut(QKeySequence(QKeySequence.StandardKey.Find))
        self.focus_action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        self.focus_action.triggered.connect(self.focus_search)

    @Slot()
    def focus_search(self) -> None:
        self.edit.setFocus(Qt.FocusReason.ShortcutFocusReason)
        self.edit.selectAll()

    def search(self, text: str | None = None) -> None:
        """Search for ``text`` (default: what the field holds)."""
        if text is not None:
            self.edit.setText(text)
        query = self.edit.text().strip()
        if not query:
            return
        self._query = query
        self._rows = []
        self._fetch(0)

    def load_more(self) -> None:
        self._fetch(len(self._rows))

    def _fetch(self, offset: int) -> None:
        query, database, page = self._query, self.database, self.page_size

        def work() -> SearchPage:
            with database.engine.connect() as conn:
                return search_me_files(conn, query, limit=page, offset=offset)

        self.edit.setToolTip(f"Searching {query!r}…")
        self.runner.run("search", work, lambda result: self._shown(result, offset), self._failed)

    def _shown(self, page: SearchPage, offset: int) -> None:
        self.edit.setToolTip("")
        if offset == 0 and len(page.rows) == 1 and not page.has_more:
            self.popup.hide()
            self.resultsShown.emit(1)
            self.meFileActivated.emit(page.rows[0].id)
            return
        self._rows.extend(page.rows)
        self.results.clear()
        if not self._rows:
            item = QListWidgetItem(f"No me_file matches {self._query!r}")
            item.setFlags(Qt.ItemFlag.NoItemFlags)
            self.results.addItem(item)
        for hit in self._rows:
            name = hit.display_name if hit.display_name is not None else "(no name)"
            item = QListWidgetItem(f"{name}  ·  #{hit.id}")
            item.setToolTip(f"me_file {hit.id}: {name}")
            item.setData(Qt.ItemDataRole.UserRole, hit.id)
            self.results.addItem(item)
        if page.has_more:
            more = QListWidgetItem("More results…")
            more.setData(self.MORE_ROLE, True)
            font = more.font()
            font.setItalic(True)
            more.setFont(font)
            self.results.addItem(more)
        self._show_popup()
        self.results.setCurrentRow(min(offset, self.results.count() - 1))
        self.resultsShown.emit(len(self._rows))

    def _show_popup(self) -> None:
        self.popup.move(self.edit.mapToGlobal(QPoint(0, self.edit.height())))
        self.popup.resize(min(max(self.edit.width(), 360), 520), 300)
        self.popup.show()
        self.results.setFocus()

    def _failed(self, message: str) -> None:
        self.edit.setToolTip(message)
        self.searchFailed.emit(message)

    def activate_row(self, row: int) -> None:
        item = self.results.item(row)
        if item is not None:
            self._activate_item(item)

    @Slot(QListWidgetItem)
    def _activate_item(self, item: QListWidgetItem) -> None:
        if item.data(self.MORE_ROLE):
            self.load_more()
            return
        me_file_id = item.data(Qt.ItemDataRole.UserRole)
        if me_file_id is None:
            return
        self.popup.hide()
        self.meFileActivated.emit(int(me_file_id))


# --- a band's population --------------------------------------------------------------------


class PopulationModel(QAbstractTableModel):
    COLUMNS = ("Population", "me_file", "Display name", "Shape", "Updated")

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.rows: list[PopulationRow] = []

    def clear(self) -> None:
        self.beginResetModel()
        self.rows = []
        self.endResetModel()

    def append(self, rows: tuple[PopulationRow, ...]) -> None:
        if not rows:
            return
        first = len(self.rows)
        self.beginInsertRows(QModelIndex(), first, first + len(rows) - 1)
        self.rows.extend(rows)
        self.endInsertRows()

    def rowCount(self, parent=QModelIndex()):  # noqa: B008, N802
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()):  # noqa: B008, N802
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if (
            orientation == Qt.Orientation.Horizontal
            and role == Qt.ItemDataRole.DisplayRole
            and 0 <= section < len(self.COLUMNS)
        ):
            return self.COLUMNS[section]
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or not 0 <= index.row() < len(self.rows):
            return None
        r = self.rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if col == 0:
                return str(r.population_id)
            if col == 1:
                return str(r.me_file_id)
            if col == 2:
                return r.display_name if r.display_name is not None else "(deleted me_file)"
            if col == 3:
                return SHAPE_BADGES[Shape(r.shape)][0]
            if col == 4:
                return _when(r.updated_at)
        if role == Qt.ItemDataRole.ForegroundRole:
            if col == 3:
                return QColor(SHAPE_BADGES[Shape(r.shape)][1])
            if col == 2 and r.display_name is None:
                return QColor(GREY)
        if role == Qt.ItemDataRole.ToolTipRole and col == 3:
            return SHAPE_BADGES[Shape(r.shape)][2]
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (0, 1):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


class BandPopulationView(QWidget):
    """A band's population rows, keyset-paged by id, filterable by shape."""

    meFileActivated = Signal(int)  # noqa: N815
    pageLoaded = Signal(int)  # rows shown in total  # noqa: N815
    loadFailed = Signal(str)  # noqa: N815

    PAGE = 200

    def __init__(
        self,
        database: Database,
        band_id: int,
        parent: QWidget | None = None,
        *,
        page_size: int = PAGE,
        shape: Shape | str | None = None,
        title: str | None = None,
    ) -> None:
        super().__init__(parent)
        self.database = database
        self.band_id = int(band_id)
        self.page_size = max(1, int(page_size))
        self.runner = TaskRunner(self)
        self.runner.secret = database.url
        self._has_more = False
        self._shape: Shape | None = None if shape is None else Shape(shape)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        bar = QHBoxLayout()
        self.heading = QLabel(title or f"Population of band {self.band_id}")
        font = QFont(self.heading.font())
        font.setBold(True)
        self.heading.setFont(font)
        self.shape_filter = QComboBox()
        self.shape_filter.addItem("All shapes", None)
        for each in Shape:
            self.shape_filter.addItem(SHAPE_BADGES[each][0], str(each))
        self.shape_filter.setCurrentIndex(
            self.shape_filter.findData(None if self._shape is None else str(self._shape))
        )
        self.shape_filter.currentIndexChanged.connect(self._filter_changed)
        self.more_button = QPushButton("Load more")
        self.more_button.clicked.connect(self.load_more)
        self.count_label = QLabel()
        bar.addWidget(self.heading)
        bar.addStretch(1)
        bar.addWidget(QLabel("Shape:"))
        bar.addWidget(self.shape_filter)
        layout.addLayout(bar)

        self.model = PopulationModel(self)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setDefaultSectionSize(self.table.fontMetrics().height() + 8)
        self.table.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.table.doubleClicked.connect(self._activated)
        self.table.activated.connect(self._activated)
        self.table.verticalScrollBar().valueChanged.connect(self._scrolled)
        self.table.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        layout.addWidget(self.table, 1)
        foot = QHBoxLayout()
        foot.addWidget(self.count_label, 1)
        foot.addWidget(self.more_button)
        layout.addLayout(foot)
        self.reload()

    def shape(self) -> Shape | None:
        return self._shape

    def set_shape(self, shape: Shape | str | None) -> None:
        value = None if shape is None else str(Shape(shape))
        index = self.shape_filter.findData(value)
        if index != self.shape_filter.currentIndex():
            self.shape_filter.setCurrentIndex(index)
        else:
            self.reload()

    @Slot()
    def reload(self) -> None:
        self.model.clear()
        self._has_more = False
        self._fetch(0)

    @Slot()
    def load_more(self) -> None:
        if self._has_more and not self.runner.busy("page"):
            last = self.model.rows[-1].population_id if self.model.rows else 0
            self._fetch(last)

    def _fetch(self, after_id: int) -> None:
        database, band_id, shape, page = self.database, self.band_id, self._shape, self.page_size

        def work() -> PopulationPage:
            with database.engine.connect() as conn:
                return band_population_page(conn, band_id, shape, after_id=after_id, limit=page)

        self.more_button.setEnabled(False)
        self.count_label.setText("Loading…")
        self.runner.run("page", work, self._page_loaded, self._failed)

    def _page_loaded(self, page: PopulationPage) -> None:
        self.model.append(page.rows)
        self._has_more = page.has_more
        self.more_button.setEnabled(page.has_more)
        n = len(self.model.rows)
        what = "row" if n == 1 else "rows"
        self.count_label.setText(
            f"{n:,} {what} shown" + (", more available" if page.has_more else "")
        )
        for col in (0, 1, 3, 4):
            self.table.resizeColumnToContents(col)
        self.pageLoaded.emit(n)

    def _failed(self, message: str) -> None:
        self.count_label.setText(message)
        self.count_label.setStyleSheet(f"color: {RED};")
        self.more_button.setEnabled(self._has_more)
        self.loadFailed.emit(message)

    @Slot(int)
    def _filter_changed(self, _index: int) -> None:
        data = self.shape_filter.currentData()
        self._shape = None if data is None else Shape(data)
        self.reload()

    @Slot(int)
    def _scrolled(self, value: int) -> None:
        if value >= self.table.verticalScrollBar().maximum() and self._has_more:
            self.load_more()

    @Slot(QModelIndex)
    def _activated(self, index: QModelIndex) -> None:
        if index.isValid() and 0 <= index.row() < len(self.model.rows):
            self.meFileActivated.emit(self.model.rows[index.row()].me_file_id)

    def activate_row(self, row: int) -> None:
        self._activated(self.model.index(row, 0))
