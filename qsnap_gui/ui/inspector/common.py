"""Small pieces the inspector's parts share: colour pills, clipping, limits, column widths."""

from __future__ import annotations

from PySide6.QtGui import QFont, QFontDatabase
from PySide6.QtWidgets import QHeaderView, QLabel

from qsnap_gui.domain.shapes import Colour

RAW_DISPLAY_CHARS = 1_000_000
PANEL_ITEMS = 200  # items listed per group / per stale list before "… N more"


def fixed_font() -> QFont:
    return QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)


def pill(text: str = "", color: str = Colour.GREY) -> QLabel:
    label = QLabel(text)
    paint_pill(label, text, color)
    return label


def paint_pill(label: QLabel, text: str, color: str) -> None:
    label.setText(text)
    label.setStyleSheet(
        f"QLabel {{ background: {color}; color: white; border-radius: 8px; padding: 1px 8px;"
        " font-weight: 600; }"
    )


def clip(text: str, n: int = 200) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def say(label: QLabel, text: str, *, error: bool = False) -> None:
    """A status line: grey, or red for an error."""
    label.setText(text)
    label.setStyleSheet(f"color: {Colour.RED if error else Colour.GREY};")


def fit_headers(header: QHeaderView, stretch: int | None = None) -> None:
    """Every column as wide as its contents and its title, so no title is ever cut.

    The ``stretch`` column takes the room left (and gives it back first when the dock is
    narrow, never below its own title's width); without one, a scroll bar shows what does not
    fit.
    """
    for col in range(header.count()):
        header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
    header.setStretchLastSection(False)
    if stretch is not None:
        header.setSectionResizeMode(stretch, QHeaderView.ResizeMode.Stretch)
        header.setMinimumSectionSize(header.sectionSizeHint(stretch))
