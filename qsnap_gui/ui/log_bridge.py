"""The Log dock shows the records the log file gets: a logging handler hands each one to the
GUI thread through a signal (records come from worker threads too)."""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, Signal

DOCK_LEVEL = logging.INFO
OUR_LOGGER = "qsnap_gui"


class _Relay(QObject):
    record = Signal(int, str)  # level, message


class DockHandler(logging.Handler):
    """Attached to the root logger while its window lives; the message only, no traceback."""

    def __init__(self, parent: QObject) -> None:
        super().__init__(DOCK_LEVEL)
        self.relay = _Relay(parent)
        self.records = self.relay.record

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.records.emit(record.levelno, record.getMessage())
        except RuntimeError:  # the window is gone before it detached us
            self.detach()
        except Exception:
            self.handleError(record)

    def attach(self) -> None:
        """Also make qsnap's own INFO records reach the handlers when nobody set a level."""
        ours = logging.getLogger(OUR_LOGGER)
        if ours.level == logging.NOTSET:
            ours.setLevel(DOCK_LEVEL)
        logging.getLogger().addHandler(self)

    def detach(self) -> None:
        logging.getLogger().removeHandler(self)
