"""qsnap: the snapshot desk for Qlarius operators (Qt-free core; the window lives in ``ui``)."""

__version__ = "0.1.0"
