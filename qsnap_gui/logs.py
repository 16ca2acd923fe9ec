"""Where qsnap writes its log: a rotating file in the user log folder, for the window and the
command line alike. Tracebacks go there and nowhere else; the terminal and the window show one
line. Qt-free, so the command line can use it."""

from __future__ import annotations

import logging
import os
import sys
import threading
from logging.handlers import RotatingFileHandler
from pathlib import Path

import platformdirs

LOG_DIR_ENV = "QSNAP_LOG_DIR"
MAX_BYTES = 2_000_000
BACKUPS = 5
FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(threadName)s] %(message)s"


def log_dir() -> Path:
    """``QSNAP_LOG_DIR``, else the platform's user log folder for qsnap."""
    override = os.environ.get(LOG_DIR_ENV)
    if override:
        return Path(override)
    return Path(platformdirs.user_log_dir("qsnap", appauthor=False))


class _FileHandler(RotatingFileHandler):
    """Ours, so a second ``setup_logging`` replaces it instead of adding another."""


def setup_logging(name: str = "qsnap", level: int = logging.INFO) -> Path | None:
    """Send every record (libraries' too) to ``<log dir>/<name>.log``; returns its path.

    Nothing is printed on the terminal by any logger afterwards; a folder that cannot be
    written leaves the file out (None) and still keeps the terminal quiet. Uncaught exceptions
    are logged with their traceback and reported in one line on stderr.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _FileHandler)]:
        root.removeHandler(handler)
        handler.close()
    logging.lastResort = None
    root.setLevel(level)
    # off first: a second call would keep whatever showwarning replaced logging's meanwhile
    logging.captureWarnings(False)
    logging.captureWarnings(True)
    path: Path | None = log_dir() / f"{name}.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = _FileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
    except OSError:
        path = None
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    _install_hooks(name, path)
    return path


def _install_hooks(name: str, path: Path | None) -> None:
    where = f" (details in {path})" if path else ""

    def excepthook(kind, value, tb) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, value, tb)
            return
        logging.getLogger(name).critical("uncaught %s", kind.__name__, exc_info=(kind, value, tb))
        print(f"{name}: unexpected error: {kind.__name__}: {value}{where}", file=sys.stderr)

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        thread = args.thread.name if args.thread else "?"
        logging.getLogger(name).critical(
            "uncaught %s in thread %s",
            args.exc_type.__name__,
            thread,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        )

    sys.excepthook = excepthook
    threading.excepthook = thread_hook
