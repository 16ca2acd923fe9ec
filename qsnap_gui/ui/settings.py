"""Preferences and recent connections in QSettings; passwords are never written."""

from __future__ import annotations

from dataclasses import dataclass, fields

from PySide6.QtCore import QSettings
from sqlalchemy.engine import URL

from qsnap_gui.domain.errors import UsageError
from qsnap_gui.engine.snapshots import DEFAULT_BATCH_SIZE
from qsnap_gui.store.dsn import normalize_url

ORGANIZATION = "qsnap"
APPLICATION = "qsnap-gui"
RECENT_KEY = "connections/recent"
MAX_RECENT = 8


@dataclass
class Preferences:
    batch_size: int = DEFAULT_BATCH_SIZE
    pool_size: int = 0  # 0: one thread per band job, up to the number of CPUs
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
            default = f.default
            values[f.name] = settings.value(f"preferences/{f.name}", default, type=type(default))
        return cls(**values)

    def save(self) -> None:
        settings = QSettings()
        for f in fields(self):
            settings.setValue(f"preferences/{f.name}", getattr(self, f.name))
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


def recent_connections() -> list[str]:
    value = QSettings().value(RECENT_KEY, [])
    if isinstance(value, str):  # QSettings gives a lone string for a one-element list
        value = [value]
    return [v for v in value if isinstance(v, str) and v]


def remember_connection(url: URL | str) -> None:
    try:
        entry = without_password(normalize_url(url) if isinstance(url, str) else url)
    except UsageError:
        return
    entries = [entry] + [e for e in recent_connections() if e != entry]
    settings = QSettings()
    settings.setValue(RECENT_KEY, entries[:MAX_RECENT])
    settings.sync()
