"""Resolve and normalise the database URL, and keep its password out of every message."""

import os
import re
from urllib.parse import quote

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from qsnap_gui.domain.errors import UsageError

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
        # echo the scheme only when it looks like one: the text before "://" (or all of a
        # key=value string such as "host=… password=…") may hold the password
        if not re.fullmatch(r"[a-z][a-z0-9+.-]{0,19}", scheme):
            raise UsageError(
                "not a database URL: it must start with postgres://, postgresql://, "
                "postgresql+psycopg:// or ecto:// (key=value connection strings are not accepted)"
            )
        raise UsageError(
            f"unsupported database URL scheme {scheme!r}: use postgres://, postgresql://, "
            "postgresql+psycopg:// or ecto://"
        )
    authority = re.split(r"[/?]", raw[len(scheme) + 3 :], maxsplit=1)[0]
    if authority.count("@") > 1:
        # parsed anyway, part of the password would become the host name and be shown
        raise UsageError(
            "cannot parse the database URL: more than one '@' before the host; "
            "write an '@' in the user name or password as %40"
        )
    try:
        url = make_url(_SCHEMES[scheme] + raw[len(scheme) :])
    except ValueError:  # the port is not a number; never echo it, it may be a misplaced secret
        raise UsageError("cannot parse the database URL: the port is not a number") from None
    except ArgumentError as exc:
        raise UsageError(f"cannot parse the database URL: {mask_text(str(exc), raw)}") from None
    query = dict(url.query)
    if query.pop("ssl", None) in ("true", "1") and "sslmode" not in query:
        query["sslmode"] = "require"
    password = query.pop("password", None)  # libpq's ?password=: hidden only as the password
    if password is not None and not url.password:
        url = url.set(password=password if isinstance(password, str) else password[0])
    return url.set(query=query)


def mask_url(url: URL | str) -> str:
    """The URL as shown to people: password replaced by ***."""
    if isinstance(url, str):
        try:
            url = normalize_url(url)
        except UsageError:
            return mask_text(url)
    return url.render_as_string(hide_password=True)


_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", re.IGNORECASE)


def mask_text(text: str, *secrets: object) -> str:
    """Remove every known secret (and any ``user:password@`` in URLs) from a message."""
    for secret in secrets:
        if isinstance(secret, URL):
            secret = secret.password
        if secret:
            for form in (str(secret), quote(str(secret), safe="")):
                text = text.replace(form, "***")
    text = re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)
    return _KEYWORD_PASSWORD.sub(r"\1***", text)  # password=… in key=value strings, ?password=


def describe(url: URL) -> str:
    """Host and database, for one-line messages."""
    host = url.host or url.query.get("host") or os.environ.get("PGHOST") or "local socket"
    if isinstance(host, tuple):
        host = host[0]
    port = f":{url.port}" if url.port else ""
    return f"{host}{port}/{url.database or os.environ.get('PGDATABASE', '')}"
