"""Remember a database password in the system keyring, only when the operator asks.

Passwords come from the URL, PGPASSWORD, ~/.pgpass (libpq reads both itself), or the keyring
entry that ``remember_password`` wrote. The entry is named by the URL without its password
(``keyring_account``), under the service ``qsnap``. Without a usable keyring backend, storing
raises ``KeyringUnavailable`` with a message the operator can act on, and looking up quietly
finds nothing: a missing keyring never stops qsnap from connecting by the other means.

No message, log line or exception text of this module ever holds a password.
"""

from __future__ import annotations

import logging

from sqlalchemy.engine import URL

from qsnap_gui.domain.errors import QsnapError
from qsnap_gui.store.dsn import mask_text, normalize_url

log = logging.getLogger(__name__)

SERVICE = "qsnap"

_NO_BACKEND = (
    "no system keyring is available to remember the password (install and unlock one, e.g. "
    "GNOME Keyring or KWallet); use PGPASSWORD or ~/.pgpass instead"
)


class KeyringUnavailable(QsnapError):
    """The password could not be stored: no keyring backend, or the keyring refused."""


def _url(url: URL | str) -> URL:
    return normalize_url(url) if isinstance(url, str) else url


def keyring_account(url: URL | str) -> str:
    """The keyring entry's name for a URL: ``user@host:port/database``, never the password."""
    url = _url(url)
    host = url.host or url.query.get("host") or ""
    if isinstance(host, tuple):
        host = host[0] if host else ""
    port = f":{url.port}" if url.port else ""
    return f"{url.username or ''}@{host}{port}/{url.database or ''}"


def _keyring():
    """The keyring module with a usable backend, or None (and why) when there is none."""
    try:
        import keyring
        from keyring.backends import fail
    except ImportError:  # pragma: no cover - a dependency, but never crash without it
        return None, "the keyring package is not installed; use PGPASSWORD or ~/.pgpass instead"
    backend = keyring.get_keyring()
    if isinstance(backend, fail.Keyring):
        return None, _NO_BACKEND
    return keyring, None


def keyring_problem() -> str | None:
    """Why a password cannot be remembered on this machine, or None when it can."""
    return _keyring()[1]


def remember_password(url: URL | str, password: str) -> str:
    """Store ``password`` for the URL's user, host, port and database; returns the entry name.

    A password inside ``url`` is ignored (the entry is named without it). Raises
    ``KeyringUnavailable`` when there is no keyring or it refuses.
    """
    if not password:
        raise KeyringUnavailable("no password to remember")
    account = keyring_account(url)
    keyring, problem = _keyring()
    if keyring is None:
        raise KeyringUnavailable(problem)
    try:
        keyring.set_password(SERVICE, account, password)
    except Exception as exc:  # any backend error: locked, refused, no D-Bus, …
        reason = mask_text(str(exc) or type(exc).__name__, password)
        raise KeyringUnavailable(f"the keyring did not store the password: {reason}") from None
    log.info("remembered the password of %s in the system keyring", account)
    return account


def lookup_password(url: URL | str) -> str | None:
    """The remembered password for the URL's user, host, port and database, or None.

    Never raises: without a keyring, or when it fails, there is simply no remembered password.
    """
    account = keyring_account(url)
    keyring, problem = _keyring()
    if keyring is None:
        log.debug("no remembered password for %s: %s", account, problem)
        return None
    try:
        return keyring.get_password(SERVICE, account)
    except Exception as exc:  # only the type: a backend's text could echo what it holds
        log.warning("could not read the keyring for %s: %s", account, type(exc).__name__)
        return None


def forget_password(url: URL | str) -> bool:
    """Delete the remembered password; True when there was one."""
    keyring, _problem = _keyring()
    if keyring is None:
        return False
    try:
        keyring.delete_password(SERVICE, keyring_account(url))
    except Exception:
        return False
    return True


def with_remembered_password(url: URL | str) -> URL:
    """The URL with the remembered password filled in when it has none of its own.

    The URL keeps its own password if it has one, and PGPASSWORD or ~/.pgpass still apply
    (libpq reads them) when nothing was remembered.
    """
    url = _url(url)
    if url.password:
        return url
    password = lookup_password(url)
    return url.set(password=password) if password else url
