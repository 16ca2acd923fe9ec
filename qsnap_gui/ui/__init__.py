"""The qsnap window (PySide6). Everything that imports Qt lives in this package."""
