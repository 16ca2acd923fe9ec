"""Preferences, recent connections and the last folder saved to, in QSettings; passwords are
never written."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from PySide6.QtCore import QSettings, QStandardPaths
from sqlalchemy.engine import URL

from qsnap_gui.domain.errors import UsageError
from qsnap_gui.engine.snapshots import DEFAULT_BATCH_SIZE
from qsnap_gui.store.dsn import normalize_url

ORGANIZATION = "qsnap"
APPLICATION = "qsnap-gui"
RECENT_KEY = "connections/recent"
MAX_RECENT = 8
SAVE_FOLDER_KEY = "paths/save"
# preferences saved under an earlier name, read when the new one was never saved
RENAMED_PREFERENCES = {"threads": "pool_size"}


@dataclass
class Preferences:
    batch_size: int = DEFAULT_BATCH_SIZE
    threads: int = 0  # job threads; 0: one per band job, up to the number of CPUs
    retry_backoff: float = 1.0
    confirm_refresh: bool = True
    confirm_force: bool = True
    confirm_depopulate: bool = True
    confirm_close: bool = True

    @classmethod
    def load(cls) -> Preferences:
        settings = QSettings()
        values = {}
        for f in fields(cls):
            key = f"preferences/{f.name}"
            old = RENAMED_PREFERENCES.get(f.name)
            if old and not settings.contains(key) and settings.contains(f"preferences/{old}"):
                key = f"preferences/{old}"
            values[f.name] = settings.value(key, f.default, type=type(f.default))
        return cls(**values)

    def save(self) -> None:
        settings = QSettings()
        for f in fields(self):
            settings.setValue(f"preferences/{f.name}", getattr(self, f.name))
        for old in RENAMED_PREFERENCES.values():
            settings.remove(f"preferences/{old}")
        settings.sync()


def without_password(url: URL) -> str:
    """The URL as remembered: no password, neither in the authority nor in the query.

    Rebuilt rather than ``url.set(password=None)``, which leaves the password in place.
    """
    bare = URL.create(
        url.drivername,
        username=url.username,
        host=url.host,
        port=url.port,
        database=url.database,
        query=url.query,
    )
    return bare.difference_update_query(["password"]).render_as_string(hide_password=False)


def as_typed(url: URL, typed: str | None) -> str:
    """``url`` without its password, with the scheme the operator typed (postgres://,
    ecto://…) rather than the driver qsnap connects through."""
    bare = without_password(url)
    scheme = typed.strip().split("://", 1)[0] if typed and "://" in typed else ""
    prefix = f"{url.drivername}://"
    return scheme + bare[len(prefix) - 3 :] if scheme and bare.startswith(prefix) else bare


def recent_connections() -> list[str]:
    value = QSettings().value(RECENT_KEY, [])
    if isinstance(value, str):  # QSettings gives a lone string for a one-element list
        value = [value]
    return [v for v in value if isinstance(v, str) and v]


def remember_connection(url: URL | str, typed: str | None = None) -> None:
    """Put the URL first in the recent list, without its password; ``typed`` (the text the
    operator entered) keeps the scheme as they wrote it."""
    try:
        entry = as_typed(normalize_url(url) if isinstance(url, str) else url, typed)
    except UsageError:
        return
    entries = [entry] + [e for e in recent_connections() if e != entry]
    settings = QSettings()
    settings.setValue(RECENT_KEY, entries[:MAX_RECENT])
    settings.sync()


def save_path(name: str) -> str:
    """Where a Save dialog opens with ``name``: the folder last saved to, else the user's
    documents (never the directory qsnap happened to be started from)."""
    folder = QSettings().value(SAVE_FOLDER_KEY, "", type=str)
    if not folder or not Path(folder).is_dir():
        folder = QStandardPaths.writableLocation(
            QStandardPaths.StandardLocation.DocumentsLocation
        ) or str(Path.home())
    return str(Path(folder) / name)


def remember_save_folder(path: str) -> None:
    settings = QSettings()
    settings.setValue(SAVE_FOLDER_KEY, str(Path(path).parent))
    settings.sync()
