"""A known password, in the URL or PGPASSWORD, is searched for everywhere qsnap could leak it:
stdout and stderr of commands that succeed and fail, log records, exception messages and
reprs, and the command lines of child processes (``ps``). Plus the optional keyring store."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
import traceback

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail
from keyring.errors import PasswordSetError
from sqlalchemy import text
from sqlalchemy.engine import make_url

from qsnap_gui.cli import main
from qsnap_gui.domain.errors import QsnapError
from qsnap_gui.engine.snapshots import snapshot_band
from qsnap_gui.store import secrets
from qsnap_gui.store.db import open_database

PASSWORD = "Pw-9f3c!x"  # distinctive; the test servers trust local connections and ignore it


def with_password(url: str, password: str = PASSWORD) -> str:
    return make_url(url).set(password=password).render_as_string(hide_password=False)


def assert_clean(*texts: object) -> None:
    for value in texts:
        shown = str(value)
        assert PASSWORD not in shown, shown[:2000]
        assert "Pw-9f3c%21x" not in shown, shown[:2000]  # its URL-encoded form


@pytest.fixture
def all_logs(caplog):
    """Every record at DEBUG: SQLAlchemy's loggers stop at WARNING unless set themselves."""
    caplog.set_level(logging.DEBUG)
    for name in ("sqlalchemy", "psycopg", "qsnap_gui", "keyring", "pgserver"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def log_text(caplog) -> str:
    parts = [caplog.text]
    for record in caplog.records:
        parts.append(record.getMessage())
        if record.exc_info:
            parts.append("".join(traceback.format_exception(*record.exc_info)))
    return "\n".join(parts)


def test_password_in_url_never_shown_by_commands_that_succeed_or_fail(db_url, capsys, all_logs):
    url = with_password(db_url)
    missing_db = with_password(
        make_url(db_url).set(database="qsnap_no_such_db").render_as_string(False)
    )
    commands = [
        (url, ["targets"], 0),
        (url, ["targets", "--json"], 0),
        (url, ["-v", "bands", "1", "--json"], 0),
        (url, ["-v", "snapshot", "--target", "1"], 0),
        (url, ["-v", "backfill", "--dry-run", "--json"], 0),
        (url, ["inspect", "1", "--json"], 0),
        (url, ["inspect", "99999999"], 2),
        (url, ["bands", "abc"], 2),
        (url, ["--read-only", "populate", "1"], 2),
        (missing_db, ["targets"], 2),
        (missing_db.replace("postgresql+psycopg", "mysql"), ["targets"], 2),
        (f"host=/tmp password={PASSWORD} dbname=x", ["targets"], 2),
        (f"postgres://u:{PASSWORD}@db:{PASSWORD}/x", ["targets"], 2),
        (f"postgres://u:{PASSWORD}@x@db/x", ["targets"], 2),
        (f"{missing_db}&password={PASSWORD}", ["targets"], 2),
    ]
    for dsn, args, expected in commands:
        code = main(["--dsn", dsn, *args])
        out, err = capsys.readouterr()
        assert code == expected, (args, out, err)
        assert_clean(out, err)
    with_env = {"QSNAP_DATABASE_URL": url}
    os.environ.update(with_env)
    try:
        assert main(["targets"]) == 0
        assert_clean(*capsys.readouterr())
    finally:
        del os.environ["QSNAP_DATABASE_URL"]
    assert any(r.name.startswith("sqlalchemy.engine") for r in all_logs.records), "no SQL logged"
    assert_clean(log_text(all_logs))


def test_password_never_in_exceptions_reprs_or_job_errors(db_url, all_logs):
    url = with_password(db_url)
    db = open_database(url)
    try:
        assert db.url.password == PASSWORD  # it is there, to be used, never to be shown
        assert_clean(repr(db), str(db.url), repr(db.url), repr(db.engine), db.display, db.where)
        with pytest.raises(Exception) as raised, db.engine.connect() as conn:
            conn.execute(text("select * from no_such_table"))
        assert_clean(str(raised.value), "".join(traceback.format_exception(raised.value)))
        timed = open_database(url + "&options=-c%20statement_timeout%3D50")
        with db.engine.connect() as holder:
            holder.execute(text("lock table me_file_tags in access exclusive mode"))
            result = snapshot_band(timed.engine, 1, backoff=0)
            holder.rollback()
        timed.dispose()
        assert result.error and "statement timeout" in result.error
        assert_clean(result)
    finally:
        db.dispose()
    # libpq's ?password= form: used, and hidden like any password
    query_form = open_database(
        f"{make_url(db_url).set(password=None).render_as_string(False)}&password={PASSWORD}"
    )
    try:
        assert query_form.url.password == PASSWORD
        assert_clean(repr(query_form), query_form.display, query_form.where)
    finally:
        query_form.dispose()
    bad = with_password(make_url(db_url).set(database="qsnap_no_such_db").render_as_string(False))
    with pytest.raises(QsnapError) as raised:
        open_database(bad)
    assert "cannot connect to" in str(raised.value)
    assert_clean(str(raised.value), "".join(traceback.format_exception(raised.value)))
    with pytest.raises(QsnapError) as raised:
        open_database(f"postgres://u:{PASSWORD}@db:{PASSWORD}/x")
    assert_clean(str(raised.value))
    assert_clean(log_text(all_logs))


def _child(env: dict[str, str], args: list[str]) -> subprocess.Popen:
    """A qsnap child held mid-band by a row lock, so its command line can be read meanwhile."""
    return subprocess.Popen(
        [sys.executable, "-m", "qsnap_gui.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


def _wait_for_lock_wait(db, band: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while True:
        with db.engine.connect() as conn:
            pid = conn.execute(
                text(
                    "select pid from pg_stat_activity where application_name = :a "
                    "and wait_event_type = 'Lock'"
                ),
                {"a": f"qsnap band {band}"},
            ).scalar()
        if pid:
            return pid
        assert time.monotonic() < deadline, "the child never reached the locked row"
        threading.Event().wait(0.05)


def test_child_processes_get_the_password_by_environment_never_on_the_command_line(db, db_url):
    band = 1
    bare = make_url(db_url).set(password=None).render_as_string(False)
    cases = [
        # the URL with its password, handed over in the environment
        ({"QSNAP_DATABASE_URL": with_password(db_url)}, []),
        # libpq's own variable, the URL without a password on the command line
        ({"PGPASSWORD": PASSWORD}, ["--dsn", bare]),
    ]
    for env, dsn_args in cases:
        with db.engine.begin() as conn:
            conn.execute(
                text(
                    "update target_populations set matching_tags_snapshot = null "
                    "where target_band_id = :b"
                ),
                {"b": band},
            )
        with db.engine.connect() as holder:
            row = holder.execute(
                text(
                    "select id from target_populations where target_band_id = :b "
                    "order by id offset 30 limit 1"
                ),
                {"b": band},
            ).scalar_one()
            holder.execute(
                text("select 1 from target_populations where id = :i for update"), {"i": row}
            )
            child = _child(
                env, [*dsn_args, "-v", "snapshot", "--band", str(band), "--batch-size", "10"]
            )
            try:
                _wait_for_lock_wait(db, band)
                ps = subprocess.run(
                    ["ps", "-eww", "-o", "pid=,args="], capture_output=True, text=True, check=True
                ).stdout
                assert f"{child.pid} " in ps and "qsnap_gui.cli" in ps
                with open(f"/proc/{child.pid}/cmdline", "rb") as fh:
                    cmdline = fh.read().decode().replace("\0", " ")
                assert "snapshot --band" in cmdline
                assert_clean(ps, cmdline)
            finally:
                holder.rollback()
            out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        assert "1 of 1 bands succeeded" in out
        assert_clean(out, err)


# --- the keyring ------------------------------------------------------------------------------


class MemoryKeyring(KeyringBackend):
    """A keyring backend in memory, so the test never touches the machine's own."""

    priority = 1

    def __init__(self) -> None:
        super().__init__()
        self.store: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.store.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.store[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        del self.store[(service, username)]


class RefusingKeyring(MemoryKeyring):
    """A locked keyring whose error text echoes what it was given."""

    def set_password(self, service: str, username: str, password: str) -> None:
        raise PasswordSetError(f"locked; could not store {password!r} for {username}")

    def get_password(self, service: str, username: str) -> str | None:
        raise RuntimeError(f"locked: {service}/{username}")


@pytest.fixture
def use_keyring():
    previous = keyring.get_keyring()

    def use(backend: KeyringBackend) -> KeyringBackend:
        keyring.set_keyring(backend)
        return backend

    yield use
    keyring.set_keyring(previous)


def test_remembered_password_is_stored_under_the_url_without_it(db_url, use_keyring, all_logs):
    memory = use_keyring(MemoryKeyring())
    url = make_url(db_url).set(username="qsnap_op", password=None)
    assert secrets.keyring_problem() is None
    assert secrets.lookup_password(url) is None
    account = secrets.remember_password(url.set(password="ignored-in-the-name"), PASSWORD)
    assert account == secrets.keyring_account(url)
    assert account.startswith("qsnap_op@") and account.endswith(f"/{url.database}")
    assert memory.store == {("qsnap", account): PASSWORD}
    assert secrets.lookup_password(url) == PASSWORD
    assert secrets.lookup_password(url.render_as_string(False)) == PASSWORD
    assert secrets.lookup_password(url.set(database="other")) is None
    assert secrets.lookup_password(url.set(username="someone_else")) is None

    filled = secrets.with_remembered_password(url)
    assert filled.password == PASSWORD
    assert secrets.with_remembered_password(url.set(password="own")).password == "own"
    db = open_database(filled.set(username=make_url(db_url).username).render_as_string(False))
    db.dispose()

    assert secrets.forget_password(url) is True
    assert secrets.lookup_password(url) is None and memory.store == {}
    assert secrets.forget_password(url) is False
    with pytest.raises(QsnapError, match="no password to remember"):
        secrets.remember_password(url, "")
    assert_clean(log_text(all_logs))


def test_without_a_keyring_storing_says_so_and_lookups_find_nothing(db_url, use_keyring, all_logs):
    url = make_url(db_url).set(password=None)
    use_keyring(fail.Keyring())
    assert "no system keyring is available" in secrets.keyring_problem()
    with pytest.raises(secrets.KeyringUnavailable, match="no system keyring is available") as e:
        secrets.remember_password(url, PASSWORD)
    assert e.value.exit_code == 2
    assert secrets.lookup_password(url) is None
    assert secrets.with_remembered_password(url) == url
    assert secrets.forget_password(url) is False

    use_keyring(RefusingKeyring())
    with pytest.raises(secrets.KeyringUnavailable, match="did not store the password") as e:
        secrets.remember_password(url, PASSWORD)
    assert_clean(str(e.value))
    assert secrets.lookup_password(url) is None
    assert_clean(log_text(all_logs))
