"""``qsnap-gui``: the window under a qasync event loop, or one screenshot of it.

Qt is imported inside the functions, so that ``main`` can check the platform plugin's system
libraries before Qt loads anything (a missing one aborts the process with signal 6).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from qsnap_gui.logs import setup_logging
from qsnap_gui.ui.platform_check import exit_if_missing

if TYPE_CHECKING:
    from PySide6.QtWidgets import QApplication

    from qsnap_gui.ui.window import MainWindow

SCREENSHOT_TIMEOUT_MS = 180_000
SCREENSHOT_SIZE = (1440, 880)


def window_size(text: str) -> tuple[int, int]:
    """``1280x800`` as (1280, 800), for ``--size``."""
    width, sep, height = text.lower().partition("x")
    if not (sep and width.isdigit() and height.isdigit()) or min(int(width), int(height)) < 200:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 1280x800")
    return int(width), int(height)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qsnap-gui", description="The qsnap window: targets, bands and snapshot jobs."
    )
    parser.add_argument(
        "--dsn",
        metavar="URL",
        help="database URL (else QSNAP_DATABASE_URL, DATABASE_URL, else the embedded demo)",
    )
    parser.add_argument("--read-only", action="store_true", help="connect read-only")
    parser.add_argument(
        "--screenshot", metavar="PATH", type=Path, help="save the loaded window as a PNG and exit"
    )
    parser.add_argument("--target", metavar="ID", type=int, help="target to select")
    parser.add_argument(
        "--me-file", metavar="ID", type=int, help="me_file to open in the inspector"
    )
    parser.add_argument(
        "--size",
        metavar="WxH",
        type=window_size,
        help=f"window size, e.g. 1280x800 (default for --screenshot: "
        f"{SCREENSHOT_SIZE[0]}x{SCREENSHOT_SIZE[1]})",
    )
    return parser


def make_app() -> QApplication:
    from PySide6.QtWidgets import QApplication

    from qsnap_gui.ui.icons import icon, style_sheet
    from qsnap_gui.ui.settings import APPLICATION, ORGANIZATION

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationDisplayName("qsnap")
    app.setStyle("Fusion")
    app.setWindowIcon(icon("qsnap"))
    app.setStyleSheet(style_sheet())
    return app


class Screenshot:
    """Saves the window once its data is on screen (and the me_file, if one was asked for, in
    the inspector); the exit code says whether it worked."""

    def __init__(
        self, window: MainWindow, path: Path, app: QApplication, me_file: int | None = None
    ) -> None:
        from PySide6.QtCore import QTimer

        self.window, self.path, self.app, self.me_file = window, path, app, me_file
        self.exit_code = 1
        window.loaded.connect(self._loaded)
        window.connectFailed.connect(self._failed)
        QTimer.singleShot(SCREENSHOT_TIMEOUT_MS, self._timeout)

    def _loaded(self) -> None:
        self.window.loaded.disconnect(self._loaded)
        inspector = self.window.inspector
        if self.me_file is None or inspector is None:
            self._settle()
            return
        inspector.reportLoaded.connect(self._settle)
        inspector.loadFailed.connect(self._failed)
        self.window.inspect(self.me_file)

    def _settle(self, *_report: object) -> None:
        from PySide6.QtCore import QTimer

        QTimer.singleShot(300, self._save)  # let the layout and the delegates settle

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.window.grab().save(str(self.path), "PNG"):
            print(f"saved {self.path}")
            self.exit_code = 0
        else:
            print(f"qsnap-gui: cannot write {self.path}", file=sys.stderr)
        self.app.quit()

    def _failed(self, message: str) -> None:
        print(f"qsnap-gui: {message}", file=sys.stderr)
        self.app.quit()

    def _timeout(self) -> None:
        print("qsnap-gui: the data did not load in time", file=sys.stderr)
        self.app.quit()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging("qsnap-gui")
    exit_if_missing()
    import qasync
    from PySide6.QtCore import Qt

    from qsnap_gui.ui.window import MainWindow

    app = make_app()
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    shooting = args.screenshot is not None
    # a screenshot shows the first-start layout, whatever the last session left
    window = MainWindow(read_only=args.read_only, remember_layout=not shooting)
    shot = None
    if args.size or shooting:
        window.resize(*(args.size or SCREENSHOT_SIZE))
    if shooting:
        shot = Screenshot(window, args.screenshot, app, args.me_file)
    if args.target is not None:
        window.select_target(args.target)
    if args.me_file is not None and not shooting:
        window.loaded.connect(partial(window.inspect, args.me_file), Qt.SingleShotConnection)
    window.show()
    window.connect_to(args.dsn, read_only=args.read_only)
    closed = asyncio.Event()
    app.aboutToQuit.connect(closed.set)
    with loop:
        loop.run_until_complete(closed.wait())
    if shot is not None:
        window.close()
        return shot.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
