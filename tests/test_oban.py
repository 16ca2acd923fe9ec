"""Jobs on Qlarius's Oban workers, against oban_jobs built by Oban's own migrations.

``install_oban`` replays lib/oban/migrations/postgres/v01.ex .. v14.ex of Oban (the DDL Ecto's
Postgres adapter emits for them, each run of ``Oban.Migrations.up/1`` in one transaction): v01
to v12 (production's table), then an upgrade to 13 (Oban 2.20) or 14 (Oban 2.21+, ``suspended``),
so the table, enum, defaults, checks, indexes and the trigger created by v01 and dropped by v12
are Oban's. ``StandInNode`` claims, runs and finishes jobs with the statements of Oban's
``Oban.Engines.Basic`` (fetch_jobs, complete_job, error_job, discard_job), its Stager and its
Lifeline, and runs the application's current workers with qsnap's own engine. No database is
mocked.
"""

from __future__ import annotations

import io
import json
import os
import sys
import threading
import time
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from qsnap_gui.cli import main
from qsnap_gui.domain import oban as od
from qsnap_gui.domain.errors import TargetBusy, UsageError
from qsnap_gui.engine import oban
from qsnap_gui.engine.population import apply_membership, outermost_first
from qsnap_gui.engine.snapshots import JobState, snapshot_band
from qsnap_gui.store import oban_jobs as oj

VERSIONS = (12, 13, 14)

# --- Oban's migrations, v01 .. v14 ------------------------------------------------------------


def migration_sql(prefix: str = "public") -> list[str]:
    q = '"' + prefix.replace('"', '""') + '"'  # inspect(prefix)
    e = prefix.replace("'", "\\'")  # escaped_prefix
    state = f"{q}.oban_job_state"
    jobs = f"{q}.oban_jobs"
    v01_notify = f"""
        CREATE OR REPLACE FUNCTION {q}.oban_jobs_notify() RETURNS trigger AS $$
        DECLARE
          channel text;
          notice json;
        BEGIN
          IF (TG_OP = 'INSERT') THEN
            channel = '{e}.oban_insert';
            notice = json_build_object('queue', NEW.queue, 'state', NEW.state);

            -- No point triggering for a job that isn't scheduled to run now
            IF NEW.scheduled_at IS NOT NULL AND NEW.scheduled_at > now() AT TIME ZONE 'utc' THEN
              RETURN null;
            END IF;
          ELSE
            channel = '{e}.oban_update';
            notice = json_build_object('queue', NEW.queue, 'new_state', NEW.state, 'old_state', OLD.state);
          END IF;

          PERFORM pg_notify(channel, notice::text);

          RETURN NULL;
        END;
        $$ LANGUAGE plpgsql;
    """
    v08_notify = f"""
        CREATE OR REPLACE FUNCTION {q}.oban_jobs_notify() RETURNS trigger AS $$
        DECLARE
          channel text;
          notice json;
        BEGIN
          IF NEW.state = 'available' THEN
            channel = '{e}.oban_insert';
            notice = json_build_object('queue', NEW.queue);

            PERFORM pg_notify(channel, notice::text);
          END IF;

          RETURN NULL;
        END;
        $$ LANGUAGE plpgsql;
    """
    create_schema = [f"CREATE SCHEMA IF NOT EXISTS {q}"] if prefix != "public" else []
    return [
        *create_schema,
        # v01
        f"""
        DO $$
        BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_type
                       WHERE typname = 'oban_job_state'
                         AND typnamespace = '{e}'::regnamespace::oid) THEN
            CREATE TYPE {state} AS ENUM (
              'available',
              'scheduled',
              'executing',
              'retryable',
              'completed',
              'discarded'
            );
          END IF;
        END$$;
        """,
        f"""CREATE TABLE IF NOT EXISTS {jobs} (
            "id" bigserial,
            "state" {state} DEFAULT 'available' NOT NULL,
            "queue" text DEFAULT 'default' NOT NULL,
            "worker" text NOT NULL,
            "args" jsonb NOT NULL,
            "errors" jsonb[] DEFAULT ARRAY[]::jsonb[] NOT NULL,
            "attempt" integer DEFAULT 0 NOT NULL,
            "max_attempts" integer DEFAULT 20 NOT NULL,
            "inserted_at" timestamp DEFAULT timezone('UTC', now()) NOT NULL,
            "scheduled_at" timestamp DEFAULT timezone('UTC', now()) NOT NULL,
            "attempted_at" timestamp,
            "completed_at" timestamp,
            PRIMARY KEY ("id"))""",
        f'CREATE INDEX IF NOT EXISTS "oban_jobs_queue_index" ON {jobs} ("queue")',
        f'CREATE INDEX IF NOT EXISTS "oban_jobs_state_index" ON {jobs} ("state")',
        f'CREATE INDEX IF NOT EXISTS "oban_jobs_scheduled_at_index" ON {jobs} ("scheduled_at")',
        v01_notify,
        f"DROP TRIGGER IF EXISTS oban_notify ON {jobs}",
        f"""CREATE TRIGGER oban_notify
            AFTER INSERT OR UPDATE OF state ON {jobs}
            FOR EACH ROW EXECUTE PROCEDURE {q}.oban_jobs_notify()""",
        # v02
        f'DROP INDEX IF EXISTS {q}."oban_jobs_scheduled_at_index"',
        f"""CREATE INDEX "oban_jobs_scheduled_at_index" ON {jobs} ("scheduled_at")
            WHERE state in ('available'::{state}, 'scheduled'::{state})""",
        f"""ALTER TABLE {jobs} ADD CONSTRAINT "worker_length"
            CHECK (char_length(worker) > 0 AND char_length(worker) < 128)""",
        f"""ALTER TABLE {jobs} ADD CONSTRAINT "queue_length"
            CHECK (char_length(queue) > 0 AND char_length(queue) < 128)""",
        f"""CREATE OR REPLACE FUNCTION {q}.oban_wrap_id(value bigint) RETURNS int AS $$
            BEGIN
              RETURN (CASE WHEN value > 2147483647 THEN mod(value, 2147483647) ELSE value END)::int;
            END;
            $$ LANGUAGE plpgsql IMMUTABLE""",
        # v03
        f'ALTER TABLE {jobs} ADD COLUMN IF NOT EXISTS "attempted_by" text[]',
        # v04
        f"DROP FUNCTION IF EXISTS {q}.oban_wrap_id(value bigint)",
        # v05
        f'DROP INDEX IF EXISTS {q}."oban_jobs_scheduled_at_index"',
        f'DROP INDEX IF EXISTS {q}."oban_jobs_queue_index"',
        f'DROP INDEX IF EXISTS {q}."oban_jobs_state_index"',
        f"""CREATE INDEX IF NOT EXISTS "oban_jobs_queue_state_scheduled_at_id_index"
            ON {jobs} ("queue", "state", "scheduled_at", "id")""",
        # v06: nothing any more (it used to alter oban_beats)
        # v07
        f"""CREATE INDEX IF NOT EXISTS "oban_jobs_attempted_at_id_index"
            ON {jobs} (attempted_at desc, "id") WHERE state in ('completed', 'discarded')""",
        # v08
        f"""ALTER TABLE {jobs} ADD COLUMN IF NOT EXISTS "discarded_at" timestamp,
            ADD COLUMN IF NOT EXISTS "priority" integer,
            ADD COLUMN IF NOT EXISTS "tags" text[]""",
        f"""ALTER TABLE {jobs} ALTER COLUMN "priority" TYPE integer,
            ALTER COLUMN "priority" SET DEFAULT 0,
            ALTER COLUMN "tags" TYPE text[],
            ALTER COLUMN "tags" SET DEFAULT ARRAY[]::text[]""",
        f'DROP INDEX IF EXISTS {q}."oban_jobs_queue_state_scheduled_at_id_index"',
        f"""CREATE INDEX IF NOT EXISTS "oban_jobs_state_queue_priority_scheduled_at_id_index"
            ON {jobs} ("state", "queue", "priority", "scheduled_at", "id")""",
        v08_notify,
        f"DROP TRIGGER IF EXISTS oban_notify ON {jobs}",
        f"""CREATE TRIGGER oban_notify
            AFTER INSERT ON {jobs}
            FOR EACH ROW EXECUTE PROCEDURE {q}.oban_jobs_notify()""",
        # v09
        f"""ALTER TABLE {jobs} ADD COLUMN IF NOT EXISTS "meta" jsonb DEFAULT '{{}}',
            ADD COLUMN IF NOT EXISTS "cancelled_at" timestamp""",
        f"""
        DO $$
        DECLARE
          version int;
          already bool;
        BEGIN
          SELECT current_setting('server_version_num')::int INTO version;
          SELECT '{{cancelled}}' <@ enum_range(NULL::{state})::text[] INTO already;

          IF already THEN
            RETURN;
          ELSIF version >= 120000 THEN
            ALTER TYPE {state} ADD VALUE IF NOT EXISTS 'cancelled';
          ELSE
            RAISE EXCEPTION 'the test server is older than PostgreSQL 12';
          END IF;
        END$$;
        """,
        f"""CREATE INDEX IF NOT EXISTS "oban_jobs_state_queue_priority_scheduled_at_id_index"
            ON {jobs} ("state", "queue", "priority", "scheduled_at", "id")""",
        # v10
        f"""ALTER TABLE {jobs} ALTER COLUMN "args" TYPE jsonb,
            ALTER COLUMN "args" SET DEFAULT '{{}}',
            ALTER COLUMN "priority" TYPE integer,
            ALTER COLUMN "priority" SET NOT NULL""",
        f'ALTER TABLE {jobs} ADD CONSTRAINT "priority_range" CHECK (priority between 0 and 3)',
        f'ALTER TABLE {jobs} ADD CONSTRAINT "positive_max_attempts" CHECK (max_attempts > 0)',
        f"""ALTER TABLE {jobs} ADD CONSTRAINT "attempt_range"
            CHECK (attempt between 0 and max_attempts)""",
        f'DROP INDEX IF EXISTS {q}."oban_jobs_args_vector"',
        f'DROP INDEX IF EXISTS {q}."oban_jobs_worker_gist"',
        f'DROP INDEX IF EXISTS {q}."oban_jobs_attempted_at_id_index"',
        f'CREATE INDEX IF NOT EXISTS "oban_jobs_args_index" ON {jobs} USING gin ("args")',
        f'CREATE INDEX IF NOT EXISTS "oban_jobs_meta_index" ON {jobs} USING gin ("meta")',
        # v11
        f"""CREATE TABLE IF NOT EXISTS {q}."oban_peers" (
            "name" text NOT NULL,
            "node" text NOT NULL,
            "started_at" timestamp NOT NULL,
            "expires_at" timestamp NOT NULL,
            PRIMARY KEY ("name"))""",
        f"ALTER TABLE {q}.oban_peers SET UNLOGGED",
        # v12
        f'ALTER TABLE {jobs} DROP CONSTRAINT "priority_range"',
        f"""ALTER TABLE {jobs} ADD CONSTRAINT "non_negative_priority"
            CHECK (priority >= 0) NOT VALID""",
        f"DROP TRIGGER IF EXISTS oban_notify ON {jobs}",
        f"DROP FUNCTION IF EXISTS {q}.oban_jobs_notify()",
        # record_version
        f"COMMENT ON TABLE {jobs} IS '12'",
    ]


def upgrade_sql(prefix: str, version: int) -> list[str]:
    """v13 and v14 over a v12 table, as a later ``Oban.Migrations.up(version: N)`` runs them."""
    q = '"' + prefix.replace('"', '""') + '"'
    state = f"{q}.oban_job_state"
    jobs = f"{q}.oban_jobs"
    v13 = [
        f'CREATE INDEX IF NOT EXISTS "oban_jobs_state_cancelled_at_index" ON {jobs} '
        '("state", "cancelled_at")',
        f'CREATE INDEX IF NOT EXISTS "oban_jobs_state_discarded_at_index" ON {jobs} '
        '("state", "discarded_at")',
    ]
    v14 = [
        f"""
        DO $$
        BEGIN
          IF NOT ('{{suspended}}' <@ enum_range(NULL::{state})::text[]) THEN
            ALTER TYPE {state} ADD VALUE 'suspended' BEFORE 'scheduled';
          END IF;
        END$$;
        """
    ]
    return [
        *(v13 if version >= 13 else []),
        *(v14 if version >= 14 else []),
        f"COMMENT ON TABLE {jobs} IS '{version}'",
    ]


def install_oban(database, prefix: str = "public", version: int = 12) -> None:
    """v01..v12 in one transaction (production's table), then the upgrade to ``version`` in
    another: a new enum value (v09's cancelled) cannot be read in the transaction that added it,
    so v14's check needs v12 committed, as it is when an installation upgrades Oban."""
    batches = [migration_sql(prefix)] + ([upgrade_sql(prefix, version)] if version > 12 else [])
    for statements in batches:
        with database.engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement.replace("%", "%%"))


@pytest.fixture
def odb(fresh_db):
    """A fresh demo copy with Oban's oban_jobs (v12, production's) in public."""
    install_oban(fresh_db)
    return fresh_db


@pytest.fixture(params=VERSIONS, ids=lambda v: f"v{v}")
def version(request) -> int:
    return request.param


@pytest.fixture
def vdb(fresh_db, version):
    """A fresh demo copy with oban_jobs at each schema version qsnap knows."""
    install_oban(fresh_db, version=version)
    return fresh_db


def url_of(database) -> str:
    return database.url.render_as_string(hide_password=False)


def libpq_url(database) -> str:
    return url_of(database).replace("postgresql+psycopg://", "postgresql://", 1)


def info_of(database) -> od.ObanInfo:
    with database.engine.connect() as conn:
        return oj.require(conn, write=True)


def row(database, job_id: int) -> dict:
    with database.engine.connect() as conn:
        r = (
            conn.execute(
                text(
                    "select id, state::text as state, queue, worker, args, errors::text[] as errors, "
                    "attempt, max_attempts, priority, attempted_by, tags::text[] as tags, meta, "
                    "inserted_at, scheduled_at, attempted_at, completed_at, discarded_at, "
                    "cancelled_at from oban_jobs where id = :id"
                ),
                {"id": job_id},
            )
            .mappings()
            .one()
        )
    return dict(r)


def job_count(database, worker: str | None = None) -> int:
    with database.engine.connect() as conn:
        return conn.execute(
            text("select count(*) from oban_jobs where cast(:w as text) is null or worker = :w"),
            {"w": worker},
        ).scalar_one()


def set_state(database, job_id: int, state: str) -> None:
    with database.engine.begin() as conn:
        conn.execute(
            text("update oban_jobs set state = cast(:s as oban_job_state) where id = :id"),
            {"s": state, "id": job_id},
        )


def db_now(database) -> datetime:
    with database.engine.connect() as conn:
        return conn.execute(text("select timezone('UTC', now())")).scalar()


def a_band(database, target_id: int = 2) -> int:
    """A band of the target that has NULL snapshots (the demo leaves some)."""
    with database.engine.connect() as conn:
        return conn.execute(
            text(
                "select tp.target_band_id from target_populations tp join target_bands b "
                "on b.id = tp.target_band_id where b.target_id = :t "
                "and tp.matching_tags_snapshot is null group by 1 order by count(*) desc limit 1"
            ),
            {"t": target_id},
        ).scalar_one()


def nulls(database, band_id: int | None = None) -> int:
    """NULL snapshots in the band (every band when None)."""
    with database.engine.connect() as conn:
        return conn.execute(
            text(
                "select count(*) from target_populations tp join target_bands b "
                "on b.id = tp.target_band_id where (cast(:b as int) is null or tp.target_band_id = :b) "
                "and tp.matching_tags_snapshot is null"
            ),
            {"b": band_id},
        ).scalar_one()


# --- a stand-in Oban node --------------------------------------------------------------------


class StandInNode:
    """Runs a queue the way Oban.Engines.Basic, the Stager and the Lifeline do, one job per
    fetch, with the application's current workers."""

    def __init__(self, database, node: str = "qlarius@worker-1") -> None:
        self.db = database
        self.node = node
        self.uuid = str(uuid.uuid4())
        self.fail: dict[int, str] = {}  # job id -> error raised by every attempt
        self.fail_attempts: dict[int, set[int]] = {}  # job id -> attempts that raise

    def fetch(self, queue: str = "targets", demand: int = 1) -> list[dict]:
        """Engines.Basic.fetch_jobs: the CTE fence, FOR UPDATE SKIP LOCKED, attempt + 1."""
        with self.db.engine.begin() as conn:
            rows = conn.execute(
                text(
                    """
                    with "subset" as materialized (
                        select id from oban_jobs
                        where state = 'available' and queue = :queue
                        order by priority asc, scheduled_at asc, id asc
                        limit :demand
                        for update skip locked
                    )
                    update oban_jobs j
                    set state = 'executing', attempted_at = timezone('UTC', now()),
                        attempted_by = array[cast(:node as text), cast(:uuid as text)],
                        attempt = j.attempt + 1
                    from "subset" x
                    where j.id = x.id and j.attempt < j.max_attempts
                    returning j.id, j.worker, j.args, j.attempt, j.max_attempts
                    """
                ),
                {"queue": queue, "demand": demand, "node": self.node, "uuid": self.uuid},
            ).mappings()
            return [dict(r) for r in rows]

    def complete(self, job_id: int) -> None:
        with self.db.engine.begin() as conn:
            conn.execute(
                text(
                    "update oban_jobs set state = 'completed', "
                    "completed_at = timezone('UTC', now()) where id = :id"
                ),
                {"id": job_id},
            )

    def _attempt_error(self, job: dict, message: str) -> str:
        return json.dumps(
            {
                "at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "attempt": job["attempt"],
                "error": f"** (RuntimeError) {message}\n    (qlarius 0.1.0) lib/qlarius/jobs.ex:42",
            }
        )

    def error(self, job: dict, message: str, backoff: int = 0) -> None:
        """The Executor: error_job while attempts remain, discard_job once they are spent."""
        with self.db.engine.begin() as conn:
            if job["attempt"] < job["max_attempts"]:
                conn.execute(
                    text(
                        "update oban_jobs set state = 'retryable', "
                        "scheduled_at = timezone('UTC', now()) + make_interval(secs => :s), "
                        "errors = array_append(errors, cast(:e as jsonb)) where id = :id"
                    ),
                    {"id": job["id"], "s": backoff, "e": self._attempt_error(job, message)},
                )
            else:
                conn.execute(
                    text(
                        "update oban_jobs set state = 'discarded', "
                        "discarded_at = timezone('UTC', now()), "
                        "errors = array_append(errors, cast(:e as jsonb)) where id = :id"
                    ),
                    {"id": job["id"], "e": self._attempt_error(job, message)},
                )

    def stage(self) -> int:
        """The Stager: scheduled and retryable jobs whose time has come become available."""
        with self.db.engine.begin() as conn:
            return conn.execute(
                text(
                    "update oban_jobs set state = 'available' where id in (select id from "
                    "oban_jobs where state in ('scheduled', 'retryable') and queue is not null "
                    "and scheduled_at <= timezone('UTC', now()))"
                )
            ).rowcount

    def rescue(self) -> int:
        """The Lifeline (rescue_after 0): jobs left executing by a dead node run again."""
        with self.db.engine.begin() as conn:
            return conn.execute(
                text(
                    "update oban_jobs set state = case when attempt >= max_attempts "
                    "then cast('discarded' as oban_job_state) "
                    "else cast('available' as oban_job_state) end "
                    "where state = 'executing' and attempted_at <= timezone('UTC', now())"
                )
            ).rowcount

    def perform(self, job: dict) -> None:
        """Run the application's worker, with qsnap's engine standing in for its code."""
        failing = self.fail.get(job["id"])
        if failing is None and job["attempt"] in self.fail_attempts.get(job["id"], set()):
            failing = f"attempt {job['attempt']} crashed"
        if failing is not None:
            self.error(job, failing)
            return
        if job["worker"] == od.WORKER_BAND:
            result = snapshot_band(self.db.engine, int(job["args"]["band_id"]), max_attempts=1)
            if result.state is not JobState.SUCCEEDED:
                self.error(job, result.error or str(result.state))
                return
        elif job["worker"] == od.WORKER_POPULATE:
            self._populate(int(job["args"]["target_id"]))
        elif job["worker"] == od.WORKER_BACKFILL:
            with self.db.engine.connect() as conn:
                bands = conn.execute(
                    text(
                        "select distinct b.id from target_populations tp join target_bands b "
                        "on b.id = tp.target_band_id where tp.matching_tags_snapshot is null"
                    )
                ).scalars()
                bands = sorted(bands)
            for band_id in bands:
                snapshot_band(self.db.engine, band_id, max_attempts=1)
        else:
            self.error(job, f"unknown worker {job['worker']}")
            return
        self.complete(job["id"])

    def _populate(self, target_id: int) -> None:
        """PopulateTargetWorker today: membership, the snapshots inline, then populated."""
        with self.db.engine.begin() as conn:
            apply_membership(conn, target_id)
            band_ids = outermost_first(conn, target_id)
        for band_id in band_ids:
            snapshot_band(self.db.engine, band_id, max_attempts=1)
        with self.db.engine.begin() as conn:
            conn.execute(
                text(
                    "update targets set population_status = 'populated', "
                    "last_populated_at = date_trunc('second', timezone('UTC', now())) "
                    "where id = :t"
                ),
                {"t": target_id},
            )

    def drain(self, queue: str = "targets") -> int:
        done = 0
        while True:
            self.stage()
            jobs = self.fetch(queue)
            if not jobs:
                return done
            for job in jobs:
                self.perform(job)
                done += 1


# --- the command line in a thread, its output readable while it runs -------------------------


class Lines(io.StringIO):
    def isatty(self) -> bool:
        return False


class CliRun:
    def __init__(self, monkeypatch, *args: str) -> None:
        self.out, self.err = Lines(), Lines()
        monkeypatch.setattr(sys, "stdout", self.out)
        monkeypatch.setattr(sys, "stderr", self.err)
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, args=(list(args),), daemon=True)
        self.thread.start()

    def _run(self, argv: list[str]) -> None:
        self.code = main(argv)

    def wait_for(self, needle: str, times: int = 1, timeout: float = 30) -> None:
        """Until the output holds ``needle`` (``times`` times): one step seen per call."""
        deadline = time.monotonic() + timeout
        while self.out.getvalue().count(needle) < times:
            assert self.thread.is_alive() or self.out.getvalue().count(needle) >= times, (
                f"qsnap ended (code {self.code}) before printing {needle!r}:\n"
                f"{self.out.getvalue()}\n{self.err.getvalue()}"
            )
            assert time.monotonic() < deadline, f"no {needle!r} in:\n{self.out.getvalue()}"
            time.sleep(0.01)

    def finish(self, timeout: float = 60) -> int:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), self.out.getvalue()
        return self.code


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def queued_id(out: str, needle: str = "enqueued Oban job ") -> int:
    return int(out.split(needle)[1].split()[0])


# --- detection and schema versions -------------------------------------------------------------


def test_without_oban_jobs_engine_oban_exits_2_with_one_line(db, db_url, capsys):
    with db.engine.connect() as conn:
        assert oj.detect(conn) is None
        band = conn.execute(text("select min(id) from target_bands")).scalar()
    for args in (
        ["snapshot", "--band", str(band), "--engine", "oban"],
        ["snapshot", "--target", "1", "--engine", "oban", "--wait"],
        ["populate", "1", "--engine", "oban"],
        ["backfill", "--dry-run", "--engine", "oban"],
        ["oban-jobs"],
        ["oban-jobs", "--cancel", "1"],
    ):
        code, out, err = run(capsys, "--dsn", db_url, *args)
        assert code == 2, (args, out, err)
        assert err.startswith("qsnap: ") and len(err.strip().splitlines()) == 1
        assert "no oban_jobs table" in err and "search path: public" in err
    code, _, err = run(capsys, "--dsn", db_url, "snapshot", "--band", str(band), "--engine", "oban")
    assert "--engine oban:" in err and "run with --engine local" in err
    with db.engine.connect() as conn:  # nothing was written on the way
        assert conn.execute(text("select to_regclass('oban_jobs')")).scalar() is None
        assert oban.application_refresh(conn, 1) == oban.AppRefresh()
        assert oban.targets_being_populated(conn, [1, 2]) == set()


V12_INDEXES = {
    "oban_jobs_pkey",
    "oban_jobs_args_index",
    "oban_jobs_meta_index",
    "oban_jobs_state_queue_priority_scheduled_at_id_index",
}
V13_INDEXES = {"oban_jobs_state_cancelled_at_index", "oban_jobs_state_discarded_at_index"}


def test_replayed_migrations_give_each_schema_version(vdb, version):
    """The fixture's table is Oban's: checks, indexes, defaults, the enum, no trigger left."""
    with vdb.engine.connect() as conn:
        info = oj.detect(conn)
        checks = dict(
            conn.execute(
                text(
                    "select conname, pg_get_constraintdef(oid) from pg_constraint "
                    "where conrelid = 'oban_jobs'::regclass and contype = 'c'"
                )
            ).all()
        )
        indexes = set(
            conn.execute(
                text("select indexname from pg_indexes where tablename = 'oban_jobs'")
            ).scalars()
        )
        triggers = conn.execute(
            text("select count(*) from pg_trigger where tgrelid = 'oban_jobs'::regclass")
        ).scalar()
        enum = conn.execute(text("select enum_range(null::oban_job_state)::text[]")).scalar()
        defaults = dict(
            conn.execute(
                text(
                    "select column_name, column_default from information_schema.columns "
                    "where table_name = 'oban_jobs'"
                )
            ).all()
        )
    states = od.ALL_STATES if version >= 14 else od.STATES
    assert enum == list(states)
    assert info == od.ObanInfo("public", version, '"public"."oban_job_state"', states)
    assert info.note is None and info.name == "public.oban_jobs"
    assert info.insert_channel == "public.oban_insert"
    assert info.signal_channel == "public.oban_signal"
    assert set(checks) == {
        "attempt_range",
        "positive_max_attempts",
        "queue_length",
        "worker_length",
        "non_negative_priority",
    }
    assert checks["non_negative_priority"] == "CHECK ((priority >= 0)) NOT VALID"
    assert indexes == (V12_INDEXES | V13_INDEXES if version >= 13 else V12_INDEXES)
    assert triggers == 0
    assert defaults["errors"] == "ARRAY[]::jsonb[]"
    assert defaults["args"] == "'{}'::jsonb" and defaults["meta"] == "'{}'::jsonb"
    assert defaults["inserted_at"] == defaults["scheduled_at"] == "timezone('UTC'::text, now())"


def test_a_schema_version_not_checked_works_with_a_note(odb, capsys):
    with odb.engine.begin() as conn:
        conn.execute(text("comment on table oban_jobs is '15'"))
    with odb.engine.connect() as conn:
        info = oj.require(conn)
    assert info.version == 15 and info.states == od.STATES
    assert info.note == (
        "public.oban_jobs has schema version 15; qsnap was checked against Oban's schema "
        "versions 12-14"
    )
    code, out, err = run(capsys, "--dsn", url_of(odb), "oban-jobs")
    assert code == 0 and "note: public.oban_jobs has schema version 15" in err
    assert out.startswith("available: 0  scheduled: 0")


def test_detect_keeps_to_the_search_path(fresh_db):
    install_oban(fresh_db, prefix="private", version=14)
    with fresh_db.engine.connect() as conn:
        assert oj.detect(conn) is None
        with pytest.raises(od.ObanUnavailable, match="search path: public"):
            oj.require(conn)
        conn.execute(text("set search_path = public, private"))
        info = oj.detect(conn)
        assert info.schema == "private" and info.version == 14
        assert info.table == '"private".oban_jobs' and info.states == od.ALL_STATES
        assert info.state_type == '"private"."oban_job_state"'
        assert info.insert_channel == "private.oban_insert"
        conn.execute(text("reset search_path"))


def test_detect_names_missing_columns_of_an_old_oban(fresh_db):
    with fresh_db.engine.begin() as conn:
        for statement in migration_sql()[:8]:  # v01 only
            conn.exec_driver_sql(statement.replace("%", "%%"))
    with fresh_db.engine.connect() as conn:
        info = oj.detect(conn)
        assert not info.usable and info.version is None
        with pytest.raises(
            od.ObanUnavailable,
            match="lacks columns priority, attempted_by, tags, meta, discarded_at, cancelled_at",
        ):
            oj.require(conn)


# --- enqueue ---------------------------------------------------------------------------------


def check_constraints_hold(database, job_id: int) -> None:
    """Evaluate every check constraint of oban_jobs on the row (NOT VALID ones included)."""
    with database.engine.connect() as conn:
        defs = conn.execute(
            text(
                "select conname, pg_get_constraintdef(oid) from pg_constraint "
                "where conrelid = 'oban_jobs'::regclass and contype = 'c'"
            )
        ).all()
        assert len(defs) == 5
        for name, definition in defs:
            expr = definition.removeprefix("CHECK ").removesuffix(" NOT VALID")
            held = conn.execute(
                text(f"select {expr} from oban_jobs where id = :id"), {"id": job_id}
            ).scalar()
            assert held is True, (name, definition)


def oban_reference_insert(database, worker: str, args: dict, queue: str = "targets") -> int:
    """What Ecto's Repo.insert of ``Worker.new(args)`` sends for a worker declared with
    ``queue: <queue>, max_attempts: 3``: the Job struct's non-nil fields; the timestamps come
    from the column defaults."""
    with database.engine.begin() as conn:
        return conn.execute(
            text(
                "insert into oban_jobs (state, queue, worker, args, meta, tags, errors, "
                "attempt, max_attempts, priority) values ('available', :q, :w, "
                "cast(:a as jsonb), '{}', '{}', '{}', 0, 3, 0) returning id"
            ),
            {"q": queue, "w": worker, "a": json.dumps(args)},
        ).scalar_one()


def listen(database, channel: str) -> psycopg.Connection:
    conn = psycopg.connect(libpq_url(database), autocommit=True)
    conn.execute(f'listen "{channel}"')
    return conn


def received(conn: psycopg.Connection) -> list[tuple[str, str]]:
    return [(n.channel, n.payload) for n in conn.notifies(timeout=2, stop_after=1)]


def assert_same_row(database, ours: int, reference: int) -> dict:
    mine, theirs = row(database, ours), row(database, reference)
    same = ("id", "inserted_at", "scheduled_at")
    assert {k: v for k, v in mine.items() if k not in same} == {
        k: v for k, v in theirs.items() if k not in same
    }
    assert mine["inserted_at"] == mine["scheduled_at"]
    assert theirs["inserted_at"] == theirs["scheduled_at"]
    check_constraints_hold(database, ours)
    return mine


def test_enqueue_band_writes_the_row_oban_insert_writes(vdb):
    band = a_band(vdb)
    listener = listen(vdb, "public.oban_insert")
    before = db_now(vdb)
    queued = oban.enqueue_band(vdb.engine, band)
    after = db_now(vdb)
    assert queued.band_id == band and not queued.refused and queued.worker == od.WORKER_BAND
    assert received(listener) == [("public.oban_insert", '{"queue":"targets"}')]
    listener.close()
    reference = oban_reference_insert(vdb, od.WORKER_BAND, {"band_id": band})
    ours = assert_same_row(vdb, queued.job_id, reference)
    assert ours["args"] == {"band_id": band}
    assert ours["state"] == "available" and ours["queue"] == "targets"
    assert (ours["attempt"], ours["max_attempts"], ours["priority"]) == (0, 3, 0)
    assert ours["errors"] == [] and ours["tags"] == [] and ours["meta"] == {}
    assert ours["attempted_by"] is None and ours["attempted_at"] is None
    assert ours["completed_at"] is ours["discarded_at"] is ours["cancelled_at"] is None
    assert before <= ours["inserted_at"] <= after  # UTC, like the column default


def test_enqueue_populate_marks_the_target_in_the_same_transaction(odb):
    queued = oban.enqueue_populate(odb.engine, 1)
    job = row(odb, queued.job_id)
    assert job["worker"] == od.WORKER_POPULATE and job["args"] == {"target_id": 1}
    check_constraints_hold(odb, queued.job_id)
    with odb.engine.connect() as conn:
        status = conn.execute(text("select population_status from targets where id = 1")).scalar()
    assert status == "populating"
    with pytest.raises(oban.AlreadyQueued, match=f"already queued as job {queued.job_id}"):
        oban.enqueue_populate(odb.engine, 1)
    again = oban.enqueue_populate_or_follow(odb.engine, 1)
    assert (again.job_id, again.refused, again.state) == (queued.job_id, True, "available")

    # a failed insert leaves the status alone: both writes are one transaction
    with odb.engine.begin() as conn:
        conn.execute(text("update targets set population_status = 'populated' where id = 3"))
        conn.execute(
            text(
                "create function refuse() returns trigger language plpgsql as "
                "$$ begin raise exception 'no more jobs'; end $$"
            )
        )
        conn.execute(
            text(
                "create trigger refuse before insert on oban_jobs "
                "for each row execute function refuse()"
            )
        )
    with pytest.raises(Exception, match="no more jobs"):
        oban.enqueue_populate(odb.engine, 3)
    with odb.engine.connect() as conn:
        status = conn.execute(text("select population_status from targets where id = 3")).scalar()
    assert status == "populated"


def test_enqueue_populate_refuses_a_target_refreshed_here(odb):
    from qsnap_gui.engine.population import TargetLock

    with TargetLock(odb.engine, 2, "x"), pytest.raises(TargetBusy, match="being refreshed"):
        oban.enqueue_populate(odb.engine, 2)
    assert job_count(odb) == 0


def test_duplicate_band_jobs_are_refused_until_the_job_ends(odb):
    band = a_band(odb)
    first = oban.enqueue_band(odb.engine, band)
    for state in ("available", "scheduled", "executing", "retryable"):
        set_state(odb, first.job_id, state)
        with pytest.raises(oban.AlreadyQueued) as refused:
            oban.enqueue_band(odb.engine, band)
        assert (refused.value.job_id, refused.value.state) == (first.job_id, state)
    set_state(odb, first.job_id, "completed")
    second = oban.enqueue_band(odb.engine, band)
    assert second.job_id != first.job_id

    # a job the application inserted with a string id counts too
    other = a_band(odb, target_id=1)
    oban_reference_insert(odb, od.WORKER_BAND, {"band_id": str(other)})
    results = oban.enqueue_bands(odb.engine, [other, band])
    assert [(r.band_id, r.refused) for r in results] == [(other, True), (band, True)]
    assert results[1].job_id == second.job_id
    assert results[1].line == (
        f"band {band}: already queued as job {second.job_id} (available), not enqueued again"
    )


def test_concurrent_enqueues_of_one_band_make_one_job(odb):
    band = a_band(odb)
    info = info_of(odb)
    barrier = threading.Barrier(8)
    outcomes: list[object] = []

    def go() -> None:
        barrier.wait()
        try:
            outcomes.append(oban.enqueue_band(odb.engine, band, info=info))
        except oban.AlreadyQueued as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    made = [o for o in outcomes if isinstance(o, oban.Enqueued)]
    assert len(outcomes) == 8 and len(made) == 1
    assert all(o.job_id == made[0].job_id for o in outcomes if isinstance(o, oban.AlreadyQueued))
    assert job_count(odb) == 1


def test_unknown_ids_and_read_only_sessions_are_refused(odb, capsys):
    url = url_of(odb)
    code, _, err = run(capsys, "--dsn", url, "snapshot", "--band", "999999", "--engine", "oban")
    assert code == 2 and "band 999999 does not exist" in err
    band = a_band(odb)
    code, _, err = run(
        capsys, "--dsn", url, "--read-only", "snapshot", "--band", str(band), "--engine", "oban"
    )
    assert code == 2 and "connect without --read-only" in err
    from qsnap_gui.store.db import make_engine

    read_only = make_engine(odb.url, read_only=True)
    with read_only.connect() as conn, pytest.raises(od.ObanUnavailable, match="may not write"):
        oj.require(conn, write=True)
    read_only.dispose()
    code, _, err = run(
        capsys, "--dsn", url, "snapshot", "--band", str(band), "--engine", "oban", "--mode", "force"
    )
    assert code == 2 and "--mode force needs --engine local" in err
    code, _, err = run(capsys, "--dsn", url, "populate", "2", "--engine", "oban", "--resume")
    assert code == 2 and "--resume needs --engine local" in err
    code, _, err = run(capsys, "--dsn", url, "oban-jobs", "--retry", "987654")
    assert code == 2 and "Oban job 987654 does not exist" in err
    assert job_count(odb) == 0


# --- the application's current workers ----------------------------------------------------------


def test_populate_on_oban_follows_the_populate_job_itself(vdb, monkeypatch):
    node = StandInNode(vdb, node="qlarius@worker-2")
    cli = CliRun(
        monkeypatch,
        *("--dsn", url_of(vdb), "populate", "2", "--engine", "oban", "--wait", "--poll", "0.02"),
    )
    cli.wait_for("target 2: enqueued Oban job")
    job_id = queued_id(cli.out.getvalue())
    head = f"job {job_id} (target 2)"
    cli.wait_for(f"{head}: available\n")
    with vdb.engine.connect() as conn:
        status = conn.execute(text("select population_status from targets where id = 2")).scalar()
    assert status == "populating"
    (populate,) = node.fetch()
    cli.wait_for(f"{head}: available -> executing (attempt 1 of 3 on qlarius@worker-2)")
    node.perform(populate)  # membership and snapshots inline, then populated
    cli.wait_for(f"{head}: executing -> completed (after 1 of 3 attempts")
    assert cli.finish() == 0
    out = cli.out.getvalue()
    assert out.rstrip().endswith(f"{head}: completed\ntarget 2 is now populated")
    assert "(band " not in out  # the application makes no band jobs any more
    assert job_count(vdb) == 1
    with vdb.engine.connect() as conn:
        assert all(nulls(vdb, b) == 0 for b in outermost_first(conn, 2))


def test_backfill_on_oban_inserts_one_backfill_job(vdb, capsys, monkeypatch):
    url = url_of(vdb)
    missing = nulls(vdb)
    assert missing > 0
    code, _, err = run(capsys, "--dsn", url, "backfill", "--yes", "--engine", "oban")
    assert code == 2 and "--engine oban fixes missing snapshots only" in err
    listener = listen(vdb, "public.oban_insert")
    args = ("--dsn", url, "backfill", "--yes", "--include", "missing", "--engine", "oban")
    code, out, err = run(capsys, *args)
    assert code == 0, err
    job_id = queued_id(out, "every target: enqueued Oban job ")
    assert "fills the NULL snapshots of every target" in err and "repairs no broken shape" in err
    assert received(listener) == [("public.oban_insert", '{"queue":"maintenance"}')]
    listener.close()
    reference = oban_reference_insert(vdb, od.WORKER_BACKFILL, {}, queue="maintenance")
    ours = assert_same_row(vdb, job_id, reference)
    assert ours["queue"] == "maintenance" and ours["args"] == {}
    assert ours["worker"] == "Qlarius.Jobs.BackfillMissingSnapshotsWorker"
    with vdb.engine.begin() as conn:
        conn.execute(text("delete from oban_jobs where id = :id"), {"id": reference})

    # the core function the window's wizard calls: the same job, refused while it is live
    (again,) = oban.enqueue_backfill(vdb.engine)
    assert (again.job_id, again.refused, again.worker) == (job_id, True, od.WORKER_BACKFILL)
    code, out, _ = run(capsys, *args, "--json")
    report = json.loads(out)
    assert code == 0 and report["enqueued"] == [again.to_json()]
    assert job_count(vdb) == 1

    # --wait follows that job to its end on the maintenance queue
    cli = CliRun(monkeypatch, *args, "--wait", "--poll", "0.02")
    cli.wait_for(f"every target: already queued as job {job_id} (available), not enqueued again")
    cli.wait_for(f"job {job_id} (every target): available\n")
    node = StandInNode(vdb)
    assert node.fetch() == []  # not on the targets queue
    (claimed,) = node.fetch("maintenance")
    cli.wait_for(f"job {job_id} (every target): available -> executing")
    node.perform(claimed)
    assert cli.finish() == 0
    assert cli.out.getvalue().rstrip().endswith("0 population snapshots are still NULL")
    assert nulls(vdb) == 0 and row(vdb, job_id)["state"] == "completed"
    monkeypatch.undo()
    code, out, _ = run(capsys, *args)
    assert code == 0 and "no population snapshot is NULL: no job enqueued" in out
    assert job_count(vdb) == 1


def test_snapshot_on_oban_warns_and_wants_a_sign_of_the_deprecated_worker(vdb, capsys):
    url = url_of(vdb)
    band, other = a_band(vdb, 2), a_band(vdb, 3)
    code, out, err = run(capsys, "--dsn", url, "snapshot", "--band", str(band), "--engine", "oban")
    assert code == 2 and out == ""
    assert "warning: Qlarius marks SnapshotBandPopulationsWorker deprecated" in err
    assert "no SnapshotBandPopulationsWorker job has completed in public.oban_jobs" in err
    assert err.strip().splitlines()[-1].endswith("or pass --yes to enqueue anyway")
    assert job_count(vdb) == 0
    code, out, err = run(
        capsys, "--dsn", url, "snapshot", "--band", str(band), "--engine", "oban", "--yes"
    )
    assert code == 0 and "deprecated" in err
    job_id = queued_id(out)
    node = StandInNode(vdb)
    node.perform(node.fetch()[0])
    assert row(vdb, job_id)["state"] == "completed"
    # a completed job shows the worker still runs: no --yes needed, the warning stays
    code, out, err = run(capsys, "--dsn", url, "snapshot", "--band", str(other), "--engine", "oban")
    assert code == 0 and f"band {other}: enqueued Oban job" in out and "deprecated" in err


# --- refused duplicates: one behaviour ----------------------------------------------------------


def test_a_refused_duplicate_exits_0_and_wait_follows_that_job(vdb, capsys, monkeypatch):
    url = url_of(vdb)
    band = a_band(vdb)
    live = oban.enqueue_band(vdb.engine, band).job_id
    populate = oban_reference_insert(vdb, od.WORKER_POPULATE, {"target_id": 3})
    for args, subject, job_id in (
        (("snapshot", "--band", str(band), "--yes"), f"band {band}", live),
        (("populate", "3"), "target 3", populate),
    ):
        code, out, err = run(capsys, "--dsn", url, *args, "--engine", "oban")
        assert code == 0, err
        assert f"{subject}: already queued as job {job_id} (available), not enqueued again" in out
    code, out, _ = run(
        capsys, "--dsn", url, "snapshot", "--target", "2", "--engine", "oban", "--yes"
    )
    assert code == 0 and f"band {band}: already queued as job {live} (available)" in out
    assert job_count(vdb, od.WORKER_POPULATE) == 1
    made = job_count(vdb, od.WORKER_BAND)

    cli = CliRun(
        monkeypatch,
        *("--dsn", url, "snapshot", "--band", str(band), "--engine", "oban", "--yes"),
        *("--wait", "--poll", "0.02"),
    )
    head = f"job {live} (band {band})"
    cli.wait_for(f"already queued as job {live}")
    cli.wait_for(f"{head}: available\n")
    node = StandInNode(vdb)
    (claimed,) = node.fetch()
    assert claimed["id"] == live
    cli.wait_for(f"{head}: available -> executing")
    node.perform(claimed)
    assert cli.finish() == 0
    assert cli.out.getvalue().rstrip().endswith(f"{head}: completed")
    assert job_count(vdb, od.WORKER_BAND) == made and nulls(vdb, band) == 0


# --- a worker runs them; qsnap shows every transition ------------------------------------------


def test_band_job_transitions_shown_by_qsnap_wait(odb, monkeypatch):
    band = a_band(odb)
    assert nulls(odb, band) > 0
    node = StandInNode(odb)
    cli = CliRun(
        monkeypatch,
        *("--dsn", url_of(odb), "snapshot", "--band", str(band), "--engine", "oban", "--yes"),
        *("--wait", "--poll", "0.02"),
    )
    cli.wait_for("enqueued Oban job")
    job_id = queued_id(cli.out.getvalue())
    head = f"job {job_id} (band {band})"
    cli.wait_for(f"{head}: available\n")

    (claimed,) = node.fetch()
    assert claimed["id"] == job_id and claimed["attempt"] == 1
    cli.wait_for(f"{head}: available -> executing (attempt 1 of 3 on qlarius@worker-1)")
    node.error(claimed, "the node lost its database connection")
    cli.wait_for(f"{head}: attempt 1 failed: ** (RuntimeError) the node lost its database")
    cli.wait_for(f"{head}: executing -> retryable")
    assert node.stage() == 1
    cli.wait_for(f"{head}: retryable -> available")
    (claimed,) = node.fetch()
    assert claimed["attempt"] == 2
    cli.wait_for(f"{head}: available -> executing (attempt 2 of 3 on qlarius@worker-1)")
    node.perform(claimed)  # qsnap's engine snapshots the band
    cli.wait_for(f"{head}: executing -> completed (after 2 of 3 attempts")
    assert cli.finish() == 0
    assert cli.out.getvalue().rstrip().endswith(f"{head}: completed")
    assert nulls(odb, band) == 0
    job = row(odb, job_id)
    assert job["state"] == "completed" and job["completed_at"] is not None
    assert job["attempted_by"][0] == "qlarius@worker-1" and len(job["attempted_by"]) == 2
    assert [json.loads(e)["attempt"] for e in job["errors"]] == [1]
    check_constraints_hold(odb, job_id)


def test_a_job_claimed_before_the_first_poll_is_told_as_a_move_from_its_enqueued_state(odb):
    band = a_band(odb)
    node = StandInNode(odb)
    queued = oban.enqueue_band(odb.engine, band)
    assert [j["id"] for j in node.fetch(demand=1)] == [queued.job_id]
    with odb.engine.connect() as conn:
        info = oj.require(conn)
    seen: list[str] = []
    waited = oban.wait_for_jobs(
        odb.engine,
        info,
        [queued.job_id],
        known_states={queued.job_id: queued.state},
        on_change=lambda change: seen.extend(change.lines()),
        poll=0.01,
        timeout=0.05,
    )
    assert waited.timed_out and waited.jobs[queued.job_id].state == "executing"
    assert seen == [
        f"job {queued.job_id} (band {band}): available -> executing "
        "(attempt 1 of 3 on qlarius@worker-1)"
    ]


def test_spent_attempts_discard_the_job_and_qsnap_exits_1(odb, monkeypatch, capsys):
    band = a_band(odb)
    node = StandInNode(odb)
    queued = oban.enqueue_band(odb.engine, band)
    node.fail[queued.job_id] = "snapshot worker crashed"
    cli = CliRun(
        monkeypatch,
        *("--dsn", url_of(odb), "snapshot", "--target", "2", "--engine", "oban", "--wait"),
        *("--poll", "0.02", "--yes"),
    )
    cli.wait_for(f"band {band}: already queued as job {queued.job_id} (available)")
    head = f"job {queued.job_id} (band {band})"
    for attempt in (1, 2, 3):
        if attempt > 1:
            assert node.stage() == 1
            cli.wait_for(f"{head}: retryable -> available", times=attempt - 1)
        claimed = node.fetch(demand=10)  # the target's other bands too, on the first round
        assert [j["attempt"] for j in claimed if j["id"] == queued.job_id] == [attempt]
        cli.wait_for(f"{head}: available -> executing (attempt {attempt} of 3")
        for job in claimed:
            node.perform(job)
        cli.wait_for(f"{head}: attempt {attempt} failed: ** (RuntimeError) snapshot worker")
    cli.wait_for(f"{head}: executing -> discarded (after 3 of 3 attempts")
    assert cli.finish() == 1
    out = cli.out.getvalue()
    assert f"{head}: discarded: ** (RuntimeError) snapshot worker crashed" in out
    assert nulls(odb, band) > 0  # populations stay valid, the band can be run again
    job = row(odb, queued.job_id)
    assert job["state"] == "discarded" and job["discarded_at"] is not None
    assert [json.loads(e)["attempt"] for e in job["errors"]] == [1, 2, 3]
    check_constraints_hold(odb, queued.job_id)

    monkeypatch.undo()
    code, out, err = run(
        capsys, "--dsn", url_of(odb), "oban-jobs", "--state", "discarded", "--json"
    )
    assert code == 0, err
    listed = json.loads(out)
    assert [j["id"] for j in listed["jobs"]] == [queued.job_id]
    assert listed["counts"]["discarded"] == 1 and listed["counts"]["completed"] >= 1
    assert listed["schema_version"] == 12
    assert [e["attempt"] for e in listed["jobs"][0]["errors"]] == [1, 2, 3]
    assert listed["jobs"][0]["node"] == "qlarius@worker-1"


def test_wait_gives_up_at_the_timeout_and_the_job_stays_queued(odb, capsys):
    band = a_band(odb)
    args = ("--dsn", url_of(odb), "snapshot", "--band", str(band), "--engine", "oban", "--yes")
    code, out, err = run(capsys, *args, "--wait", "--timeout", "0.3", "--poll", "0.05")
    assert code == 1 and "stopped waiting after 0.3s; the jobs go on" in err
    job_id = queued_id(out)
    assert f"job {job_id} (band {band}): available" in out
    assert row(odb, job_id)["state"] == "available"
    code, out, err = run(capsys, *args)
    assert code == 0 and f"band {band}: already queued as job {job_id} (available)" in out


# --- retry and cancel: Oban's own state changes -------------------------------------------------


def clone(database, job_id: int) -> int:
    """A copy of the job row, to apply Oban's own statement to."""
    with database.engine.begin() as conn:
        return conn.execute(
            text(
                "insert into oban_jobs (state, queue, worker, args, errors, attempt, max_attempts, "
                "priority, attempted_by, tags, meta, inserted_at, scheduled_at, attempted_at, "
                "completed_at, discarded_at, cancelled_at) select state, queue, worker, "
                "args || '{\"clone\": true}', errors, attempt, max_attempts, priority, "
                "attempted_by, tags, meta, inserted_at, scheduled_at, attempted_at, completed_at, "
                "discarded_at, cancelled_at from oban_jobs where id = :id returning id"
            ),
            {"id": job_id},
        ).scalar_one()


def oban_retry_all_jobs(database, job_id: int) -> None:
    """Engines.Basic.retry_all_jobs for one id, as Ecto renders it (utc_now() as a parameter)."""
    with database.engine.begin() as conn:
        conn.execute(
            text(
                "update oban_jobs as o0 set state = 'available', "
                "max_attempts = GREATEST(o0.max_attempts, o0.attempt + 1), scheduled_at = :now, "
                "completed_at = NULL, cancelled_at = NULL, discarded_at = NULL "
                "from (select sj0.id as id, sj0.queue as queue, sj0.state as state "
                "from oban_jobs as sj0 where (sj0.id = :id) "
                "and (sj0.state not in ('available', 'executing'))) as s1 where o0.id = s1.id"
            ),
            {"id": job_id, "now": datetime.now(UTC).replace(tzinfo=None)},
        )


def oban_cancel_job(database, job_id: int) -> None:
    """Engines.Basic.cancel_job (no unsaved error), as Ecto renders it."""
    with database.engine.begin() as conn:
        conn.execute(
            text(
                "update oban_jobs as o0 set state = 'cancelled', cancelled_at = :now "
                "where (o0.id = :id) and (o0.state not in ('cancelled', 'completed', 'discarded'))"
            ),
            {"id": job_id, "now": datetime.now(UTC).replace(tzinfo=None)},
        )


def comparable(r: dict, *, drop: tuple[str, ...]) -> dict:
    out = {k: v for k, v in r.items() if k not in ("id", *drop)}
    out["args"] = {k: v for k, v in r["args"].items() if k != "clone"}
    return out


def discarded_job(database) -> int:
    band = a_band(database)
    queued = oban.enqueue_band(database.engine, band)
    node = StandInNode(database)
    node.fail[queued.job_id] = "boom"
    for _ in range(3):
        node.stage()
        node.perform(node.fetch()[0])
    assert row(database, queued.job_id)["state"] == "discarded"
    return queued.job_id


def test_retry_is_oban_retry_job(odb, capsys):
    job_id = discarded_job(odb)
    twin = clone(odb, job_id)
    before = db_now(odb)
    retried = oban.retry_job(odb.engine, job_id)
    oban_retry_all_jobs(odb, twin)
    ours, theirs = row(odb, job_id), row(odb, twin)
    assert comparable(ours, drop=("scheduled_at",)) == comparable(theirs, drop=("scheduled_at",))
    assert ours["state"] == "available" and ours["max_attempts"] == 4 and ours["attempt"] == 3
    assert ours["discarded_at"] is None and len(ours["errors"]) == 3
    assert ours["scheduled_at"] >= before
    assert retried.state == "available" and retried.max_attempts == 4
    check_constraints_hold(odb, job_id)
    # running it again works: the fourth attempt is within max_attempts
    node = StandInNode(odb)
    (claimed,) = node.fetch()
    assert claimed["id"] == job_id and claimed["attempt"] == 4
    node.perform(claimed)
    assert row(odb, job_id)["state"] == "completed"

    # only discarded and cancelled jobs; never beside a live job of the same band
    with pytest.raises(UsageError, match="is completed: only discarded or cancelled"):
        oban.retry_job(odb.engine, job_id)
    code, _, err = run(capsys, "--dsn", url_of(odb), "oban-jobs", "--retry", str(job_id))
    assert code == 2 and "is completed: only discarded or cancelled jobs are retried" in err
    cancelled = oban.enqueue_band(odb.engine, a_band(odb, target_id=1))
    oban.cancel_job(odb.engine, cancelled.job_id)
    live = oban.enqueue_band(odb.engine, cancelled.band_id)
    with pytest.raises(oban.AlreadyQueued, match=f"Oban job {live.job_id} \\(available\\)"):
        oban.retry_job(odb.engine, cancelled.job_id)
    oban.cancel_job(odb.engine, live.job_id)
    code, out, err = run(capsys, "--dsn", url_of(odb), "oban-jobs", "--retry", str(live.job_id))
    assert code == 0, err
    assert (
        out
        == f"job {live.job_id} (band {live.band_id}): retried, available (attempt 0 of 3 so far)\n"
    )
    with pytest.raises(oban.AlreadyQueued):
        oban.retry_job(odb.engine, cancelled.job_id)
    oban.cancel_job(odb.engine, live.job_id)
    again = oban.retry_job(odb.engine, cancelled.job_id)
    assert again.state == "available" and again.max_attempts == 3 and again.cancelled_at is None
    with pytest.raises(UsageError, match="Oban job 987654 does not exist"):
        oban.retry_job(odb.engine, 987654)


def test_help_says_retry_is_limited_to_discarded_and_cancelled_jobs(capsys):
    with pytest.raises(SystemExit) as done:
        main(["oban-jobs", "--help"])
    assert done.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "run a discarded or cancelled job again, as Oban.retry_job does (only those:" in out
    assert "Oban also retries completed, retryable and scheduled jobs, qsnap does not)" in out
    assert "Oban schema versions 12 to 14 are known" in out


def test_cancel_is_oban_cancel_job_in_every_state_not_ended(vdb, version):
    states = ["available", "scheduled", "retryable", "executing"]
    states += ["suspended"] if version >= 14 else []
    listener = listen(vdb, "public.oban_signal")
    for state in states:
        queued = oban.enqueue_band(vdb.engine, a_band(vdb))
        if state == "executing":
            StandInNode(vdb).fetch()
        else:
            set_state(vdb, queued.job_id, state)
        assert row(vdb, queued.job_id)["state"] == state
        twin = clone(vdb, queued.job_id)
        before = db_now(vdb)
        outcome = oban.cancel_job(vdb.engine, queued.job_id)
        oban_cancel_job(vdb, twin)
        assert received(listener) == [
            ("public.oban_signal", f'{{"action":"pkill","job_id":{queued.job_id}}}')
        ]
        assert outcome.was == state
        ours, theirs = row(vdb, queued.job_id), row(vdb, twin)
        drop = ("cancelled_at",)
        assert comparable(ours, drop=drop) == comparable(theirs, drop=drop), state
        assert ours["state"] == "cancelled" and ours["cancelled_at"] >= before
        check_constraints_hold(vdb, queued.job_id)
        with pytest.raises(UsageError, match="is already cancelled: nothing to cancel"):
            oban.cancel_job(vdb.engine, queued.job_id)
    listener.close()
    completed = oban.enqueue_band(vdb.engine, a_band(vdb, target_id=1))
    set_state(vdb, completed.job_id, "completed")
    with pytest.raises(UsageError, match="is already completed: nothing to cancel"):
        oban.cancel_job(vdb.engine, completed.job_id)
    assert row(vdb, completed.job_id)["state"] == "completed"


def test_an_executing_job_cancelled_while_no_node_listens_never_runs_again(vdb, capsys):
    band = a_band(vdb)
    queued = oban.enqueue_band(vdb.engine, band)
    dead = StandInNode(vdb, node="qlarius@gone")
    (claimed,) = dead.fetch()
    assert claimed["id"] == queued.job_id
    # the node died with the job executing; nobody listens on oban_signal
    code, out, err = run(capsys, "--dsn", url_of(vdb), "oban-jobs", "--cancel", str(claimed["id"]))
    assert code == 0, err
    assert out == (
        f"job {queued.job_id} cancelled (it was executing on qlarius@gone: its node was asked "
        "to kill it)\n"
    )
    job = row(vdb, queued.job_id)
    assert job["state"] == "cancelled" and job["cancelled_at"] is not None
    survivor = StandInNode(vdb, node="qlarius@worker-2")
    assert survivor.rescue() == 0  # the Lifeline only rescues rows still executing
    assert survivor.stage() == 0 and survivor.fetch() == []
    assert row(vdb, queued.job_id)["state"] == "cancelled" and nulls(vdb, band) > 0


# --- listing: every state of the version found --------------------------------------------------


def test_every_state_of_the_schema_version_is_listed_and_filtered(vdb, version, capsys):
    url = url_of(vdb)
    made = [oban.enqueue_band(vdb.engine, a_band(vdb, t)).job_id for t in (1, 2)]
    expected = od.ALL_STATES if version >= 14 else od.STATES
    if version >= 14:
        set_state(vdb, made[0], "suspended")
    with vdb.engine.connect() as conn:
        info = oj.require(conn)
        counts = oj.state_counts(conn, info)
        assert list(counts) == list(expected)
        assert sum(counts.values()) == 2 and counts["available"] == (1 if version >= 14 else 2)
    code, out, err = run(capsys, "--dsn", url, "oban-jobs")
    assert code == 0, err
    assert out.splitlines()[0] == "  ".join(f"{s}: {counts[s]}" for s in expected)
    code, out, err = run(capsys, "--dsn", url, "oban-jobs", "--state", "suspended", "--json")
    if version >= 14:
        assert code == 0 and [j["id"] for j in json.loads(out)["jobs"]] == [made[0]]
        assert json.loads(out)["counts"]["suspended"] == 1
    else:
        assert code == 2 and out == ""
        assert err.strip() == (
            f"qsnap: public.oban_jobs (Oban schema version {version}) has no job state "
            "'suspended'; its states are available, scheduled, executing, retryable, completed, "
            "discarded, cancelled"
        )
    # a suspended job has not ended: waiting on it goes on, cancelling it works
    if version >= 14:
        waited = oban.wait_for_jobs(vdb.engine, info, [made[0]], poll=0.01, timeout=0.05)
        assert waited.timed_out and waited.jobs[made[0]].state == "suspended"


def test_oban_jobs_lists_filters_and_counts(odb, capsys):
    url = url_of(odb)
    bands = [a_band(odb, t) for t in (1, 2, 3)]
    made = [oban.enqueue_band(odb.engine, b).job_id for b in bands]
    populate = oban.enqueue_populate(odb.engine, 4).job_id
    (backfill,) = oban.enqueue_backfill(odb.engine)
    oban_reference_insert(odb, "Qlarius.Jobs.SendOffersWorker", {"offer_id": 1})
    oban.cancel_job(odb.engine, made[0])
    with odb.engine.connect() as conn:
        info = oj.require(conn)
        assert oj.state_counts(conn, info) == {
            **dict.fromkeys(od.STATES, 0),
            "available": 4,
            "cancelled": 1,
        }
        assert [j.id for j in oj.list_jobs(conn, info, states=["available"])] == [
            backfill.job_id,
            populate,
            made[2],
            made[1],
        ]
        assert [j.id for j in oj.list_jobs(conn, info, workers=[od.WORKER_POPULATE])] == [populate]
        assert len(oj.list_jobs(conn, info, workers=None)) == 6
        with pytest.raises(UsageError, match="has no job state 'done'"):
            oj.list_jobs(conn, info, states=["done"])
        progress = oj.band_progress(conn, bands)
    for band in bands:
        assert progress[band].missing == nulls(odb, band) > 0

    code, out, err = run(capsys, "--dsn", url, "oban-jobs")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == (
        "available: 4  scheduled: 0  executing: 0  retryable: 0  completed: 0  "
        "discarded: 0  cancelled: 1"
    )
    assert lines[1].split()[:5] == ["id", "state", "worker", "args", "attempt"]
    assert lines[3].split()[:5] == [
        str(backfill.job_id),
        "available",
        "backfill",
        "every",
        "target",
    ]
    assert f"{populate}" in lines[4] and "populate" in lines[4] and "target 4" in lines[4]
    assert "SendOffers" not in out
    code, out, _ = run(capsys, "--dsn", url, "oban-jobs", "--worker", "populate", "--json")
    assert [j["id"] for j in json.loads(out)["jobs"]] == [populate]
    code, out, _ = run(
        capsys, "--dsn", url, "oban-jobs", "--worker", "Qlarius.Jobs.SendOffersWorker"
    )
    assert "available: 1" in out and "SendOffersWorker" in out and "offer_id" in out
    code, out, _ = run(capsys, "--dsn", url, "oban-jobs", "--state", "retryable")
    assert code == 0 and out.splitlines()[-1] == "no jobs match"
    with pytest.raises(SystemExit) as usage:
        run(capsys, "--dsn", url, "oban-jobs", "--state", "done")
    assert usage.value.code == 2 and "invalid choice: 'done'" in capsys.readouterr().err


# --- the application refreshing a target ------------------------------------------------------


def populating(database, target_id: int) -> None:
    with database.engine.begin() as conn:
        conn.execute(
            text("update targets set population_status = 'populating' where id = :t"),
            {"t": target_id},
        )


def stuck_of(database_or_engine, target_id: int) -> bool:
    from qsnap_gui.engine.targets import list_targets

    engine = getattr(database_or_engine, "engine", database_or_engine)
    with engine.connect() as conn:
        return {t.id: t.stuck for t in list_targets(conn)}[target_id]


def test_application_refresh_names_the_live_populate_job(vdb, version):
    """As Targets.trigger_population leaves it: populating, and the application's job."""
    populating(vdb, 2)
    job_id = oban_reference_insert(vdb, od.WORKER_POPULATE, {"target_id": 2})
    other = oban_reference_insert(vdb, od.WORKER_BAND, {"target_id": 3})  # not a populate job
    states = [*od.ACTIVE_STATES, *od.ENDED_STATES] + (["suspended"] if version >= 14 else [])
    for state in states:
        set_state(vdb, job_id, state)
        with vdb.engine.connect() as conn:
            seen = oban.application_refresh(conn, 2)
            assert oban.application_refresh(conn, 3) == oban.AppRefresh()
            being = oban.targets_being_populated(conn, [1, 2, 3])
        if state in od.ACTIVE_STATES:
            assert seen == oban.AppRefresh(job_id, state), state
            assert seen.label == f"busy: application job {job_id} {state}"
            assert f"Oban job {job_id} (PopulateTargetWorker) is {state}" in seen.refusal(2)
            assert being == {2} and not stuck_of(vdb, 2)
        else:
            assert seen == oban.AppRefresh() and not seen.blocks and seen.label == "", state
            assert being == set() and stuck_of(vdb, 2)
    set_state(vdb, other, "completed")
    # the oldest live job is named; a job with the id as a string counts (args->>'target_id')
    later = oban_reference_insert(vdb, od.WORKER_POPULATE, {"target_id": "2"})
    set_state(vdb, job_id, "executing")
    with vdb.engine.connect() as conn:
        assert oban.application_refreshes(conn, [2, 3]) == {2: oban.AppRefresh(job_id, "executing")}
        set_state(vdb, job_id, "completed")
        assert oban.application_refresh(conn, 2) == oban.AppRefresh(later, "available")


def test_a_target_populating_on_the_workers_is_not_stuck(odb):
    queued = oban.enqueue_populate(odb.engine, 1)
    assert not stuck_of(odb, 1)
    with odb.engine.begin() as conn:
        conn.execute(
            text("update oban_jobs set state = 'discarded', discarded_at = now() where id = :j"),
            {"j": queued.job_id},
        )
    assert stuck_of(odb, 1)


_roles = iter(range(1, 10_000))


@pytest.fixture
def role_url(vdb, pg_admin_url):
    """Factory: a LOGIN role made with these statements, and the URL to connect as it."""
    database = vdb.url.database
    admin = make_url(pg_admin_url).set(database=database).render_as_string(False)
    made: list[str] = []

    def make(*statements: str) -> str:
        role = f"qsnap_oban_{os.getpid()}_{next(_roles)}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"create role {role} login")
            made.append(role)
            for sql in statements:
                conn.execute(sql.replace("{role}", role))
        return vdb.url.set(username=role, password=None).render_as_string(False)

    yield make
    with psycopg.connect(admin, autocommit=True) as conn:
        for role in made:
            conn.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity where usename = %s",
                (role,),
            )
            conn.execute(f"drop owned by {role}")
            conn.execute(f"drop role {role}")


def test_a_role_that_cannot_read_oban_jobs_cannot_tell(vdb, role_url, capsys):
    populating(vdb, 2)
    oban_reference_insert(vdb, od.WORKER_POPULATE, {"target_id": 2})
    url = role_url(
        "grant usage on schema public to {role}",
        "grant select on all tables in schema public to {role}",
        "revoke select on oban_jobs from {role}",
    )
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            info = oj.detect(conn)
            assert info is not None and not info.can_read and info.usable
            seen = oban.application_refresh(conn, 2)
            assert seen.unknown and not seen.busy and seen.blocks
            why = (
                "this role may not read public.oban_jobs (it needs USAGE on schema public and "
                "SELECT on the table)"
            )
            assert seen.reason == why and seen.label == f"cannot tell: {why}"
            assert seen.refusal(2).startswith(
                "cannot tell whether the application is refreshing target 2: this role may not"
            )
            assert oban.targets_being_populated(conn, [1, 2]) == {1, 2}
            conn.execute(text("select 1"))  # the session is still usable
        assert not stuck_of(engine, 2)  # never "stuck" when it cannot be told
    finally:
        engine.dispose()
    code, _, err = run(capsys, "--dsn", url, "oban-jobs")
    assert code == 2 and "may not read public.oban_jobs (USAGE on schema public or SELECT" in err


def test_oban_jobs_in_a_schema_the_role_may_not_use_cannot_tell(fresh_db, pg_admin_url):
    install_oban(fresh_db, prefix="oban", version=12)
    populating(fresh_db, 2)
    database = fresh_db.url.database
    admin = make_url(pg_admin_url).set(database=database).render_as_string(False)
    role = f"qsnap_oban_{os.getpid()}_{next(_roles)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"create role {role} login")
        conn.execute(f"grant usage on schema public to {role}")
        conn.execute(f"grant select on all tables in schema public to {role}")
        conn.execute(f"grant select on oban.oban_jobs to {role}")  # but no USAGE on oban
        conn.execute(f"alter role {role} set search_path = public, oban")
    engine = create_engine(fresh_db.url.set(username=role, password=None))
    try:
        with engine.connect() as conn:
            info = oj.detect(conn)
            assert info.schema == "oban" and not info.can_read
            seen = oban.application_refresh(conn, 2)
            assert seen.unknown and "needs USAGE on schema oban" in seen.reason
            assert oban.targets_being_populated(conn, [2]) == {2}
            assert conn.execute(text("select count(*) from targets")).scalar() > 0
    finally:
        engine.dispose()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity where usename = %s",
                (role,),
            )
            conn.execute(f"drop owned by {role}")
            conn.execute(f"drop role {role}")
