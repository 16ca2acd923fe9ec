"""Icons and the style sheet from resources/ (SVGs drawn for qsnap, rendered by Qt's svg plugin)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from PySide6.QtGui import QIcon

RESOURCES = Path(__file__).resolve().parents[2] / "resources"


@cache
def icon(name: str) -> QIcon:
    """A missing file gives an empty icon: a bad install must not stop the window."""
    path = RESOURCES / "icons" / f"{name}.svg"
    return QIcon(str(path)) if path.exists() else QIcon()


def style_sheet() -> str:
    path = RESOURCES / "qsnap.qss"
    return path.read_text(encoding="utf-8") if path.exists() else ""
