"""The log file (qsnap_gui.logs) and the Log dock: same records, tracebacks only in the file."""

from __future__ import annotations

import logging
import sys
import threading
import warnings

import pytest
from PySide6.QtGui import QDesktopServices

from qsnap_gui import logs


@pytest.fixture
def log_folder(tmp_path, monkeypatch):
    """setup_logging into tmp_path; the process's logging and hooks are put back afterwards."""
    folder = tmp_path / "logs"
    monkeypatch.setenv(logs.LOG_DIR_ENV, str(folder))
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.lastResort, sys.excepthook, threading.excepthook)
    yield folder
    for handler in root.handlers[:]:
        if handler not in saved[0]:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(saved[1])
    logging.lastResort, sys.excepthook, threading.excepthook = saved[2:]
    logging.captureWarnings(False)


def test_records_and_tracebacks_go_to_the_file_not_the_terminal(log_folder, capfd):
    path = logs.setup_logging("qsnap-test")
    assert path == log_folder / "qsnap-test.log"
    logging.getLogger("sqlalchemy.pool").warning("a library speaks")
    try:
        raise KeyError("boom")
    except KeyError:
        logging.getLogger("qsnap_gui.engine").exception("the job failed")
    warnings.warn("a deprecation", DeprecationWarning, stacklevel=1)
    for handler in logging.getLogger().handlers:
        handler.flush()
    text = path.read_text(encoding="utf-8")
    assert "WARNING sqlalchemy.pool [MainThread] a library speaks" in text
    assert "the job failed" in text and "Traceback" in text and "KeyError: 'boom'" in text
    assert "a deprecation" in text
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_an_uncaught_error_is_one_line_on_the_terminal(log_folder, capfd):
    path = logs.setup_logging("qsnap-test")
    try:
        raise ZeroDivisionError("no rows")
    except ZeroDivisionError:
        sys.excepthook(*sys.exc_info())
    err = capfd.readouterr().err
    assert err == f"qsnap-test: unexpected error: ZeroDivisionError: no rows (details in {path})\n"
    assert "Traceback" in path.read_text(encoding="utf-8")


def test_a_second_setup_replaces_the_file_handler(log_folder):
    logs.setup_logging("qsnap-test")
    logs.setup_logging("qsnap-test")
    files = [getattr(h, "baseFilename", "") for h in logging.getLogger().handlers]
    assert [f for f in files if f.startswith(str(log_folder))] == [
        str(log_folder / "qsnap-test.log")
    ]


def test_an_unwritable_folder_keeps_the_terminal_quiet(tmp_path, monkeypatch, log_folder, capfd):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(logs.LOG_DIR_ENV, str(blocker / "logs"))
    assert logs.setup_logging("qsnap-test") is None
    logging.getLogger("sqlalchemy").error("nobody hears this")
    assert capfd.readouterr().err == ""


def test_the_log_dock_shows_the_records_of_every_thread(log_folder, database, make_window, qtbot):
    path = logs.setup_logging("qsnap-test")
    window = make_window(database)
    assert "connected to" in window.log_view.toPlainText()

    def work() -> None:
        try:
            raise OSError("disk full")
        except OSError:
            logging.getLogger("qsnap_gui.engine.snapshots").exception("band 3 failed")

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    qtbot.waitUntil(lambda: "band 3 failed" in window.log_view.toPlainText(), timeout=10_000)
    shown = window.log_view.toPlainText()
    assert "error: band 3 failed" in shown and "Traceback" not in shown
    text = path.read_text(encoding="utf-8")
    assert "connected to" in text and "OSError: disk full" in text


def test_help_opens_the_log_folder(log_folder, database, make_window, monkeypatch):
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", staticmethod(opened.append))
    window = make_window(database)
    window.act_open_logs.trigger()
    assert [url.toLocalFile() for url in opened] == [str(log_folder)]
    assert log_folder.is_dir()


def test_a_closed_window_leaves_logging_alone(database, make_window, qtbot):
    window = make_window(database)
    handler = window.log_handler
    assert handler in logging.getLogger().handlers
    window.close()
    assert handler not in logging.getLogger().handlers
    logging.getLogger("qsnap_gui").info("after the window")
