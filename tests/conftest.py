"""Test databases: one embedded PostgreSQL per test session (or QSNAP_TEST_DSN), one database
per test module, copied from a demo template made once."""

from __future__ import annotations

import itertools
import os
import re
import tempfile
import warnings

import psycopg
import pytest
from sqlalchemy.engine import make_url

from qsnap_gui.store.db import Database, open_database
from qsnap_gui.tools.demo import DemoSpec, generate_demo

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# the log file of in-process runs of the window and the command line, not the user's
os.environ.setdefault("QSNAP_LOG_DIR", tempfile.mkdtemp(prefix="qsnap-test-logs-"))

TEMPLATE = "qsnap_test_template"
TEMPLATE_SPEC = DemoSpec(me_files=3000, seed=7, zips=300)
_counter = itertools.count(1)


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """A libpq URL of a server where tests may create databases."""
    dsn = os.environ.get("QSNAP_TEST_DSN")
    if dsn:
        yield dsn.replace("postgresql+psycopg://", "postgresql://", 1)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        # not tmp_path_factory: pytest prunes old basetemps, even one a parallel session's
        # server still runs in
        server = pgserver.get_server(tempfile.mkdtemp(prefix="qsnap-pg-"), cleanup_mode="delete")
    yield server.get_uri("postgres")
    server.cleanup()


def _url_for(admin_url: str, name: str) -> str:
    url = make_url(admin_url.replace("postgresql://", "postgresql+psycopg://", 1))
    return url.set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def create_db(pg_admin_url):
    """Factory: a new empty database (optionally copied from a template); returns its URL."""
    made: list[str] = []

    def create(prefix: str = "t", template: str | None = None) -> str:
        name = re.sub(r"[^a-z0-9_]", "_", f"{prefix}_{os.getpid()}_{next(_counter)}".lower())
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            clause = f' template "{template}"' if template else ""
            conn.execute(f'create database "{name}"{clause}')
        made.append(name)
        return _url_for(pg_admin_url, name)

    yield create
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        for name in made:
            conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(scope="session")
def demo_template(pg_admin_url, create_db) -> str:
    """The name of a template database holding the demo data set (made once per session)."""
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{TEMPLATE}" with (force)')
        conn.execute(f'create database "{TEMPLATE}"')
    template_db = open_database(_url_for(pg_admin_url, TEMPLATE), check_schema=False)
    generate_demo(template_db.engine, TEMPLATE_SPEC)
    template_db.dispose()
    yield TEMPLATE
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{TEMPLATE}" with (force)')


@pytest.fixture(scope="module")
def db_url(create_db, demo_template, request) -> str:
    """A module's own copy of the demo database."""
    return create_db(request.module.__name__.rsplit(".", 1)[-1], template=demo_template)


@pytest.fixture(scope="module")
def db(db_url) -> Database:
    database = open_database(db_url)
    yield database
    database.dispose()


@pytest.fixture
def empty_db_url(create_db) -> str:
    return create_db("empty")


@pytest.fixture
def fresh_db(create_db, demo_template, request) -> Database:
    """A test's own copy of the demo database, for tests that rewrite it."""
    database = open_database(create_db(request.node.name[:30], template=demo_template))
    yield database
    database.dispose()
