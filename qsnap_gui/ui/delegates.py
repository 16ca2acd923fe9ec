"""Cells drawn rather than written: the coverage bar and a running job's progress bar."""

from __future__ import annotations

from PySide6.QtCore import QRect, QRectF, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPalette
from PySide6.QtWidgets import (
    QApplication,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionProgressBar,
    QStyleOptionViewItem,
)

from qsnap_gui.ui import format as fmt
from qsnap_gui.ui.models.base import COVERAGE_ROLE, JOB_ROLE
from qsnap_gui.ui.palette import (
    COVERAGE_FAIR,
    COVERAGE_GOOD,
    COVERAGE_POOR,
    PROGRESS_FILL,
    PROGRESS_TEXT,
    TRACK,
)

BAR_MAX_WIDTH = 160


def coverage_color(share: float) -> QColor:
    if share >= 0.95:
        return COVERAGE_GOOD
    if share >= 0.6:
        return COVERAGE_FAIR
    return COVERAGE_POOR


def _background(option: QStyleOptionViewItem, painter: QPainter, delegate, index) -> QStyle:
    """The cell's selection and background, without its text."""
    opt = QStyleOptionViewItem(option)
    delegate.initStyleOption(opt, index)
    opt.text = ""
    opt.icon = QIcon()
    style = opt.widget.style() if opt.widget else QApplication.style()
    style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, opt.widget)
    return style


class CoverageDelegate(QStyledItemDelegate):
    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index) -> None:
        share = index.data(COVERAGE_ROLE)
        if share is None:
            super().paint(painter, option, index)
            return
        _background(option, painter, self, index)
        text = fmt.percent(share)
        metrics = option.fontMetrics
        text_width = metrics.horizontalAdvance("100.0 %") + 8
        rect = option.rect.adjusted(6, 0, -6, 0)
        width = min(max(rect.width() - text_width, 12), BAR_MAX_WIDTH)
        bar = QRectF(rect.left(), rect.center().y() - 4, width, 8)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(TRACK)
        painter.drawRoundedRect(bar, 4, 4)
        if share > 0:
            filled = QRectF(bar)
            filled.setWidth(max(bar.width() * share, 8))
            painter.setBrush(coverage_color(share))
            painter.drawRoundedRect(filled, 4, 4)
        selected = option.state & QStyle.StateFlag.State_Selected
        role = (
            option.palette.ColorRole.HighlightedText if selected else option.palette.ColorRole.Text
        )
        painter.setPen(option.palette.color(role))
        text_rect = QRect(int(bar.right()) + 8, rect.top(), text_width, rect.height())
        painter.drawText(
            text_rect, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, text
        )
        painter.restore()


class JobProgressDelegate(QStyledItemDelegate):
    """A progress bar while the row's job is active; the model's text and icon otherwise."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index) -> None:
        info = index.data(JOB_ROLE)
        if info is None or not info.active:
            super().paint(painter, option, index)
            return
        style = _background(option, painter, self, index)
        bar = QStyleOptionProgressBar()
        bar.rect = option.rect.adjusted(3, 3, -3, -3)
        bar.state = QStyle.StateFlag.State_Enabled | QStyle.StateFlag.State_Horizontal
        bar.direction = option.direction
        bar.fontMetrics = option.fontMetrics
        palette = QPalette(option.palette)  # the views' pale selection colour is too faint here
        palette.setColor(QPalette.ColorRole.Highlight, PROGRESS_FILL)
        palette.setColor(QPalette.ColorRole.HighlightedText, PROGRESS_TEXT)
        bar.palette = palette
        bar.minimum = 0
        bar.maximum = max(info.rows_total, 1) if info.rows_total else 100
        bar.progress = info.rows_done if info.rows_total else 0
        bar.text = index.data(Qt.ItemDataRole.DisplayRole) or ""
        bar.textVisible = True
        bar.textAlignment = Qt.AlignmentFlag.AlignCenter
        style.drawControl(QStyle.ControlElement.CE_ProgressBar, bar, painter, option.widget)
