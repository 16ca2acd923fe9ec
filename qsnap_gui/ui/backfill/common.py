"""What the wizard's pages share: their ids and the small grey note under a control."""

from __future__ import annotations

from enum import IntEnum

from PySide6.QtWidgets import QLabel


class Page(IntEnum):
    SCOPE = 0
    SCAN = 1
    RUN = 2
    SUMMARY = 3


def note(text: str = "", name: str = "paneSubtitle") -> QLabel:
    label = QLabel(text)
    label.setObjectName(name)
    label.setWordWrap(True)
    return label
