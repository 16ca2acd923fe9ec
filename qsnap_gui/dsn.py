"""Resolve and normalise the database URL, and keep its password out of every message."""

import os
import re

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from .errors import UsageError

_SCHEMES = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
    "postgresql+psycopg3": "postgresql+psycopg",
    "ecto": "postgresql+psycopg",
}


def resolve_url(dsn: str | None = None) -> str | None:
    """The URL to use: ``--dsn``, then QSNAP_DATABASE_URL, then DATABASE_URL; None means embedded."""
    for candidate in (dsn, os.environ.get("QSNAP_DATABASE_URL"), os.environ.get("DATABASE_URL")):
        if candidate and candidate.strip():
            return candidate.strip()
    return None


def normalize_url(raw: str) -> URL:
    """Parse a Phoenix/Ecto/libpq-style URL into a psycopg 3 SQLAlchemy URL."""
    scheme = raw.split("://", 1)[0].lower() if "://" in raw else ""
    if scheme not in _SCHEMES:
        shown = scheme or raw.split(":", 1)[0][:20]
        raise UsageError(
            f"unsupported database URL scheme {shown!r}: use postgres://, postgresql://, "
            "postgresql+psycopg:// or ecto://"
        )
    try:
        url = make_url(_SCHEMES[scheme] + raw[len(scheme) :])
    except ArgumentError as exc:
        raise UsageError(f"cannot parse the database URL: {mask_text(str(exc), raw)}") from None
    query = dict(url.query)
    if query.pop("ssl", None) in ("true", "1") and "sslmode" not in query:
        query["sslmode"] = "require"
    return url.set(query=query)


def mask_url(url: URL | str) -> str:
    """The URL as shown to people: password replaced by ***."""
    if isinstance(url, str):
        try:
            url = normalize_url(url)
        except UsageError:
            return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
    return url.render_as_string(hide_password=True)


def mask_text(text: str, *secrets: object) -> str:
    """Remove every known secret (and any ``user:password@`` in URLs) from a message."""
    for secret in secrets:
        if isinstance(secret, URL):
            secret = secret.password
        if secret:
            text = text.replace(str(secret), "***")
    return re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)


def describe(url: URL) -> str:
    """Host and database, for one-line messages."""
    host = url.host or url.query.get("host") or os.environ.get("PGHOST") or "local socket"
    if isinstance(host, tuple):
        host = host[0]
    port = f":{url.port}" if url.port else ""
    return f"{host}{port}/{url.database or os.environ.get('PGDATABASE', '')}"
