"""Icons and the style sheet (SVGs drawn for qsnap, rendered by Qt's svg plugin).

They live in the top-level ``resources/`` folder; a wheel carries that folder as the package
``qsnap_gui.resources``. An installed qsnap reads them from there, a checkout (editable install
or not) from the folder itself.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from PySide6.QtGui import QIcon

CHECKOUT = Path(__file__).resolve().parents[2] / "resources"


@cache
def resource_root() -> Traversable:
    try:
        return resources.files("qsnap_gui.resources")
    except ModuleNotFoundError:
        return CHECKOUT


@cache
def icon(name: str) -> QIcon:
    """A missing file gives an empty icon: a bad install must not stop the window."""
    path = resource_root() / "icons" / f"{name}.svg"
    return QIcon(str(path)) if path.is_file() else QIcon()


def style_sheet() -> str:
    path = resource_root() / "qsnap.qss"
    return path.read_text(encoding="utf-8") if path.is_file() else ""
