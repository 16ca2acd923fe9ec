"""The me_file inspector: why a me_file is in each band, and is what we stored still true."""

from __future__ import annotations

from functools import partial

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QColor, QGuiApplication
from PySide6.QtWidgets import (
    QFileDialog,
    QLabel,
    QStackedWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from qsnap_gui.domain.codec import Decoded, Shape
from qsnap_gui.domain.shapes import Colour, shape_info
from qsnap_gui.engine.inspection import InspectReport, Membership, resnapshot_row
from qsnap_gui.store.db import ROW_SNAPSHOT_PRIVILEGES, Database
from qsnap_gui.ui import format as fmt
from qsnap_gui.ui.access import write_block
from qsnap_gui.ui.inspector.common import RAW_DISPLAY_CHARS, paint_pill, say
from qsnap_gui.ui.inspector.layout import SHAPE_COLUMN, InspectorLayout
from qsnap_gui.ui.inspector.offers import OffersPanel
from qsnap_gui.ui.inspector.population import BandPopulationView
from qsnap_gui.ui.inspector.report import LoadedReport, MembershipView, load_report
from qsnap_gui.ui.inspector.search import SearchField
from qsnap_gui.ui.inspector.why import fill_why
from qsnap_gui.ui.models.snapshot_tree import Node, NodeKind, write_csv
from qsnap_gui.ui.settings import remember_save_folder, save_path
from qsnap_gui.ui.tasks import TaskRunner
from qsnap_gui.ui.widgets import ElidedLabel

OFFERS_SECTION = 1  # the tab of the offers and ad events


class InspectorWidget(QWidget):
    """Memberships of one me_file and, for the chosen one, tree, raw JSON, why and stale."""

    reportLoaded = Signal(object)  # LoadedReport  # noqa: N815
    loadFailed = Signal(str)  # noqa: N815
    snapshotWritten = Signal(int)  # population id  # noqa: N815
    resnapshotFailed = Signal(str)  # noqa: N815

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
        self._sized_for: int | None = None  # the me_file the memberships table was sized for
        self._can_write = write_block(database, ROW_SNAPSHOT_PRIVILEGES) is None
        self._user_sized = False
        self._build()
        self._show_membership(None)

    def _build(self) -> None:
        head, self.body = InspectorLayout(self).build()
        self.refresh_button.clicked.connect(self.refresh)
        self.copy_button.clicked.connect(self.copy_json)
        self.csv_button.clicked.connect(lambda: self.save_tree_csv())
        self.memberships.itemSelectionChanged.connect(self._membership_selected)
        self.snapshot_now_button.clicked.connect(self.resnapshot_current)
        self.resnapshot_button.clicked.connect(self.resnapshot_current)
        if not self._can_write:
            tip = "This session may not write snapshots (read-only or missing UPDATE privilege)"
            for button in (self.resnapshot_button, self.snapshot_now_button):
                button.setToolTip(tip)
        self.body.splitterMoved.connect(self._splitter_moved)
        self.placeholder = QLabel(
            "Search a me_file by id or name (Ctrl+F),\nor double-click a row of a band's population."
        )
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setStyleSheet(f"color: {Colour.GREY};")
        # the memberships, and beside them the offers and ad events (hidden where none exist)
        self.offers = OffersPanel(self.database)
        self.sections = QTabWidget()
        self.sections.setDocumentMode(True)
        self.sections.addTab(self.body, "Memberships")
        self.sections.addTab(self.offers, "Offers && ad events")
        self.sections.setTabVisible(OFFERS_SECTION, False)
        self.offers.availabilityChanged.connect(
            lambda on: self.sections.setTabVisible(OFFERS_SECTION, on)
        )
        self.offers.rowShown.connect(self._update_snapshot_buttons)
        self.offers.bandActivated.connect(self.show_band)
        self.sections.currentChanged.connect(self._update_snapshot_buttons)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.placeholder)
        self.stack.addWidget(self.sections)
        self.status = ElidedLabel()
        outer = QVBoxLayout(self)
        outer.setContentsMargins(6, 6, 6, 6)
        outer.addLayout(head)
        outer.addWidget(self.stack, 1)
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

    @Slot(int)
    def show_band(self, band_id: int) -> None:
        """The membership of that band on the Memberships tab (an offer's why, now)."""
        report = self.report
        for row, m in enumerate(report.memberships if report else ()):
            if m.band_id == band_id:
                self.sections.setCurrentIndex(0)
                self.memberships.selectRow(row)
                return
        self._say(f"This me_file is no longer in band {band_id}")

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

    def _chosen_snapshot(self) -> tuple[Decoded, str, str] | None:
        """(decoded, JSON text, CSV file name) of the snapshot on show: the chosen offer or ad
        event on the offers tab, else the chosen membership's."""
        if self.sections.currentIndex() == OFFERS_SECTION:
            return self.offers.chosen_snapshot()
        m, view = self.current_membership(), self._current_view()
        if m is None or view is None:
            return None
        return m.decoded, view.json_text, f"me_file_{self.report.me_file_id}_band_{m.band_id}.csv"

    def _update_snapshot_buttons(self, *_args: object) -> None:
        chosen = self._chosen_snapshot()
        self.copy_button.setEnabled(chosen is not None)
        self.csv_button.setEnabled(chosen is not None and bool(chosen[0].parents))

    @Slot()
    def copy_json(self) -> None:
        chosen = self._chosen_snapshot()
        if chosen is None:
            return
        QGuiApplication.clipboard().setText(chosen[1])
        self._say(f"Copied {len(chosen[1]):,} characters of JSON")

    def save_tree_csv(self, path: str | None = None) -> str | None:
        """Save the chosen snapshot's tree as CSV; asks for a file name when none is given."""
        chosen = self._chosen_snapshot()
        if chosen is None:
            return None
        decoded, _json, suggested = chosen
        if not path:
            path, _filter = QFileDialog.getSaveFileName(
                self, "Save tree as CSV", save_path(suggested), "CSV files (*.csv);;All files (*)"
            )
            if not path:
                return None
        try:
            rows = write_csv(path, decoded)
        except OSError as exc:
            self._say(f"Could not save {path}: {exc.strerror or exc}", error=True)
            return None
        remember_save_folder(path)
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
            partial(resnapshot_row, self.database.engine, population_id),
            lambda _value, p=population_id: self._resnapshotted(p),
            self._resnapshot_failed,
        )

    # -- loading ---------------------------------------------------------------------------

    def _load(self) -> None:
        me_file_id = self._me_file_id
        self._say(f"Loading me_file {me_file_id}…")
        self.refresh_button.setEnabled(False)
        self.offers.load(me_file_id)
        self.runner.run(
            "report", partial(load_report, self.database, me_file_id), self._loaded, self._failed
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
        self.stack.setCurrentWidget(self.sections)
        self._fill_memberships(report)
        if report.me_file_id != self._sized_for:
            self._sized_for = report.me_file_id
            self._size_memberships(len(report.memberships))
        if report.memberships:
            self.memberships.selectRow(self._wanted_row(report))
            self._membership_selected()
        else:
            self._show_membership(None)
        self._say("")
        self.reportLoaded.emit(loaded)

    def _wanted_row(self, report: InspectReport) -> int:
        """The membership asked for (by population, else by band), else the first."""
        want = self._want_population
        for i, m in enumerate(report.memberships):
            if (want is not None and m.population_id == want) or (
                want is None and self._want_band is not None and m.band_id == self._want_band
            ):
                return i
        return 0

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
        """Show every membership row (3 to 8 rows high) unless the operator sized it.

        Only for another me_file: reloading the same one (after a re-snapshot) keeps the
        splitter where it is.
        """
        if self._user_sized:
            return
        table = self.memberships
        shown = max(3, min(rows, 8))
        want = (
            table.horizontalHeader().height() + shown * table.verticalHeader().defaultSectionSize()
        )
        want += 2 * table.frameWidth() + 2
        if table.horizontalScrollBar().isVisible():
            want += table.horizontalScrollBar().sizeHint().height()
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
            info = shape_info(m.shape)
            where = (
                f"{target} · {m.band_label} (band {m.band_id}) · population row "
                f"{m.population_id} · updated {fmt.stamp(m.updated_at)}"
            )
            for col, value in enumerate((target, m.band_label, info.label, fmt.when(m.updated_at))):
                item = QTableWidgetItem(value)
                item.setToolTip(info.tip if col == SHAPE_COLUMN else where)
                if col == SHAPE_COLUMN:
                    item.setForeground(QColor(info.colour))
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
        self._update_snapshot_buttons()
        if m is None:
            self._show_nothing()
            return
        view = self.loaded.views[m.population_id]
        shape = Shape(m.shape)
        info = shape_info(shape)
        paint_pill(self.shape_badge, info.label, info.colour)
        self.shape_badge.setToolTip(info.tip)
        self.shape_badge.show()
        self.never_bar.setVisible(shape is Shape.MISSING)
        self.snapshot_info.setText(
            f"{m.band_label} · band {m.band_id} · population row {m.population_id}"
            f" · updated {fmt.stamp(m.updated_at)}"
        )
        self.tree_model.set_root(view.nodes)
        for index in self.tree_model.parent_indexes():
            self.tree.expand(index)
        self.raw.setPlainText(_raw_text(m, view))
        fill_why(self.why, m)
        badge = self.stale.show_check(m)
        paint_pill(self.stale_badge, badge.text, badge.color)
        self.stale_badge.setToolTip(badge.tip)
        self.stale_badge.show()
        self._set_write_buttons(True)

    def _show_nothing(self) -> None:
        self.tree_model.set_root(Node(NodeKind.ROOT, ""))
        self.raw.setPlainText("")
        self.why.clear()
        self.stale.clear()
        self.shape_badge.hide()
        self.stale_badge.hide()
        self.snapshot_info.setText("")
        self.never_bar.hide()
        self._set_write_buttons(False)

    def _set_write_buttons(self, enabled: bool) -> None:
        on = enabled and self._can_write and self.current_membership() is not None
        self.resnapshot_button.setEnabled(on)
        self.snapshot_now_button.setEnabled(on)

    def _say(self, text: str, *, error: bool = False) -> None:
        say(self.status, text, error=error)


def _raw_text(m: Membership, view: MembershipView) -> str:
    """The Raw JSON tab's text, clipped for very large values (Copy JSON copies all of it)."""
    text = view.json_text if m.raw_text is not None else "null"
    if len(text) <= RAW_DISPLAY_CHARS:
        return text
    return (
        text[:RAW_DISPLAY_CHARS]
        + f"\n\n… clipped at {RAW_DISPLAY_CHARS:,} of {len(view.json_text):,} characters;"
        " Copy JSON copies all of it"
    )
