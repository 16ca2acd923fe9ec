"""The window's colours as QColors: the shared hex palette plus a few background tints."""

from __future__ import annotations

from PySide6.QtGui import QColor

from qsnap_gui.domain.codec import Shape
from qsnap_gui.domain.jobs import JobState
from qsnap_gui.domain.shapes import Colour, shape_info

GREEN = QColor(Colour.GREEN)
RED = QColor(Colour.RED)
AMBER = QColor(Colour.AMBER)
BLUE = QColor(Colour.BLUE)
GREY = QColor(Colour.GREY)
DIM = QColor(Colour.DIM)

STUCK_BG = QColor("#fde8e8")
BULLSEYE_BG = QColor("#fff7e0")
BLANK_FG = QColor("#a4262c")  # a tag without a value, in the snapshot tree
BLANK_BG = QColor("#fff4ce")
NOTE_FG = QColor("#555555")  # message rows of the snapshot tree

COVERAGE_GOOD = QColor("#16a34a")
COVERAGE_FAIR = QColor("#f59e0b")
COVERAGE_POOR = QColor("#dc2626")
TRACK = QColor("#e2e8f0")
PROGRESS_FILL = QColor("#93c5fd")
PROGRESS_TEXT = QColor("#0f172a")

STATE_COLORS = {
    JobState.QUEUED: DIM,
    JobState.WAITING: AMBER,
    JobState.RUNNING: BLUE,
    JobState.RETRYING: AMBER,
    JobState.SUCCEEDED: GREEN,
    JobState.FAILED: RED,
    JobState.CANCELLED: GREY,
}


def shape_color(shape: Shape | str) -> QColor:
    return QColor(shape_info(shape).colour)
