"""The main window and its parts (see ``main_window``)."""

from qsnap_gui.ui.window.main_window import MainWindow

__all__ = ["MainWindow"]
