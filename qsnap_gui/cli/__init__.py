"""The ``qsnap`` command line: the same core flows the window drives, for consoles and schedules."""

from qsnap_gui.cli.main import main

__all__ = ["main"]
