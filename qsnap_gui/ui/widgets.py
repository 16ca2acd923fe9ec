"""Small widgets of the main window: the message banner, the log view, status badges, a label
that elides rather than widens its pane."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from PySide6.QtCore import QSize, Qt, Slot
from PySide6.QtGui import QFont, QFontDatabase, QPainter, QPaintEvent, QTextCursor
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QToolButton,
    QWidget,
)

from qsnap_gui.ui.icons import icon


class Banner(QFrame):
    """An inline message above the tables: a lost connection or a failed job, with its remedy."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("banner")
        self.setProperty("kind", "error")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 6, 6)
        self.icon = QLabel()
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.action = QPushButton()
        self.action.clicked.connect(self._act)
        close = QToolButton()
        close.setText("✕")
        close.setAutoRaise(True)
        close.setToolTip("Dismiss")
        close.clicked.connect(self.hide)
        layout.addWidget(self.icon)
        layout.addWidget(self.message, 1)
        layout.addWidget(self.action)
        layout.addWidget(close)
        self._callback: Callable[[], None] | None = None
        self.hide()

    def show_message(
        self,
        text: str,
        *,
        kind: str = "error",
        action: str | None = None,
        callback: Callable[[], None] | None = None,
    ) -> None:
        self.setProperty("kind", kind)
        self.style().unpolish(self)
        self.style().polish(self)
        self.icon.setPixmap(icon("state-failed" if kind == "error" else "info").pixmap(18, 18))
        self.message.setText(text)
        self._callback = callback
        self.action.setVisible(bool(action and callback))
        self.action.setText(action or "")
        self.show()

    @Slot()
    def _act(self) -> None:
        self.hide()
        if self._callback:
            self._callback()


class LogView(QPlainTextEdit):
    """The Log dock: what the log file gets, one line each (tracebacks stay in the file)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self.setMaximumBlockCount(5000)
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        font.setPointSizeF(max(font.pointSizeF() - 1, 8))
        self.setFont(font)

    @Slot(str)
    def append_line(self, line: str) -> None:
        at_end = self.verticalScrollBar().value() == self.verticalScrollBar().maximum()
        self.appendPlainText(f"{datetime.now():%H:%M:%S}  {line}")
        if at_end:
            self.moveCursor(QTextCursor.MoveOperation.End)

    @Slot(int, str)
    def append_record(self, level: int, message: str) -> None:
        """A log record: warnings and errors say so."""
        prefix = "" if level < logging.WARNING else f"{logging.getLevelName(level).lower()}: "
        self.append_line(prefix + message)


def badge(text: str, name: str, tooltip: str) -> QLabel:
    """A coloured pill in the status bar; its colours come from the style sheet."""
    label = QLabel(text)
    label.setObjectName(name)
    label.setProperty("badge", True)
    label.setToolTip(tooltip)
    font = QFont(label.font())
    font.setBold(True)
    label.setFont(font)
    label.hide()
    return label


class ElidedLabel(QLabel):
    """One line that ends in "…" when its pane is narrow, the whole text in its tooltip.

    A plain QLabel asks for its text's full width, so one long me_file name or error would
    widen the dock it sits in, or push its neighbours out of view.
    """

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(text, parent)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)

    def setText(self, text: str) -> None:  # noqa: N802
        super().setText(text)
        self.setToolTip(text if text else "")

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return QSize(0, super().minimumSizeHint().height())

    def elided(self) -> bool:
        return self.fontMetrics().horizontalAdvance(self.text()) > self.contentsRect().width()

    def paintEvent(self, _event: QPaintEvent) -> None:  # noqa: N802
        painter = QPainter(self)
        rect = self.contentsRect()
        text = self.fontMetrics().elidedText(
            self.text().replace("\n", " "), Qt.TextElideMode.ElideRight, rect.width()
        )
        self.style().drawItemText(
            painter,
            rect,
            int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
            self.palette(),
            self.isEnabled(),
            text,
            self.foregroundRole(),
        )
