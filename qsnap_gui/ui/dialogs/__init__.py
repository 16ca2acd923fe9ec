"""The window's dialogs: File > Connect… and File > Preferences…."""

from qsnap_gui.ui.dialogs.connect import REMEMBER_TIP, ConnectDialog
from qsnap_gui.ui.dialogs.preferences import PreferencesDialog

__all__ = ["REMEMBER_TIP", "ConnectDialog", "PreferencesDialog"]
