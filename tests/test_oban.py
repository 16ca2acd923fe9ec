"""Jobs on Qlarius's Oban workers (issue 9), against oban_jobs built by Oban's own migrations.

``install_oban`` replays lib/oban/migrations/postgres/v01.ex .. v12.ex of Oban (the DDL Ecto's
Postgres adapter emits for them, in one transaction as ``Oban.Migrations.up/1`` runs them), so
the table, enum, defaults, checks, indexes and the trigger created by v01 and dropped by v12
are Oban's. ``StandInNode`` claims, runs and finishes jobs with the statements of Oban's
``Oban.Engines.Basic`` (fetch_jobs, complete_job, error_job, discard_job) and its Stager, and
runs qsnap's own engine (``snapshots.snapshot_band``) for a band job. No database is mocked.
"""

from __future__ import annotations

import io
import json
import re
import sys
import threading
import time
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from sqlalchemy import text

from qsnap_gui.cli import main
from qsnap_gui.domain.errors import TargetBusy, UsageError
from qsnap_gui.engine import oban
from qsnap_gui.engine.population import apply_membership, outermost_first
from qsnap_gui.engine.snapshots import JobState, snapshot_band

# --- Oban's migrations, v01 .. v12 ------------------------------------------------------------


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


def install_oban(database, prefix: str = "public") -> None:
    with database.engine.begin() as conn:
        for statement in migration_sql(prefix):
            conn.exec_driver_sql(statement.replace("%", "%%"))


@pytest.fixture
def odb(fresh_db):
    """A fresh demo copy with Oban's oban_jobs (v12) in public."""
    install_oban(fresh_db)
    return fresh_db


def url_of(database) -> str:
    return database.url.render_as_string(hide_password=False)


def libpq_url(database) -> str:
    return url_of(database).replace("postgresql+psycopg://", "postgresql://", 1)


def info_of(database) -> oban.ObanInfo:
    with database.engine.connect() as conn:
        return oban.require(conn, write=True)


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


def nulls(database, band_id: int) -> int:
    with database.engine.connect() as conn:
        return conn.execute(
            text(
                "select count(*) from target_populations where target_band_id = :b "
                "and matching_tags_snapshot is null"
            ),
            {"b": band_id},
        ).scalar_one()


# --- a stand-in Oban node --------------------------------------------------------------------


class StandInNode:
    """Runs the queue the way Oban.Engines.Basic and the Stager do, one job per fetch."""

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

    def perform(self, job: dict) -> None:
        """Run the worker: qsnap's engine for a band, membership and band jobs for a target."""
        failing = self.fail.get(job["id"])
        if failing is None and job["attempt"] in self.fail_attempts.get(job["id"], set()):
            failing = f"attempt {job['attempt']} crashed"
        if failing is not None:
            self.error(job, failing)
            return
        if job["worker"] == oban.WORKER_BAND:
            result = snapshot_band(self.db.engine, int(job["args"]["band_id"]), max_attempts=1)
            if result.state is JobState.SUCCEEDED:
                self.complete(job["id"])
            else:
                self.error(job, result.error or str(result.state))
        elif job["worker"] == oban.WORKER_POPULATE:
            target_id = int(job["args"]["target_id"])
            with self.db.engine.begin() as conn:
                apply_membership(conn, target_id)
                band_ids = outermost_first(conn, target_id)
                for band_id in band_ids:  # what Oban.insert(SnapshotBandPopulationsWorker.new)
                    conn.execute(
                        text(
                            "insert into oban_jobs (state, queue, worker, args, max_attempts) "
                            "values ('available', 'targets', :w, cast(:a as jsonb), 3)"
                        ),
                        {"w": oban.WORKER_BAND, "a": json.dumps({"band_id": band_id})},
                    )
                conn.execute(
                    text(
                        "update targets set population_status = 'populated', "
                        "last_populated_at = date_trunc('second', timezone('UTC', now())) "
                        "where id = :t"
                    ),
                    {"t": target_id},
                )
            self.complete(job["id"])
        else:
            self.error(job, f"unknown worker {job['worker']}")

    def drain(self) -> int:
        done = 0
        while True:
            self.stage()
            jobs = self.fetch()
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


def wait_until(predicate, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# --- detection --------------------------------------------------------------------------------


def test_without_oban_jobs_engine_oban_exits_2_with_one_line(db, db_url, capsys):
    with db.engine.connect() as conn:
        assert oban.detect(conn) is None
        band = conn.execute(text("select min(id) from target_bands")).scalar()
    for args in (
        ["snapshot", "--band", str(band), "--engine", "oban"],
        ["snapshot", "--target", "1", "--engine", "oban", "--wait"],
        ["populate", "1", "--engine", "oban"],
        ["backfill", "--dry-run", "--engine", "oban"],
        ["oban-jobs"],
    ):
        code, out, err = run(capsys, "--dsn", db_url, *args)
        assert code == 2, (args, out, err)
        assert err.startswith("qsnap: ") and len(err.strip().splitlines()) == 1
        assert "no oban_jobs table" in err and "search path: public" in err
    code, _, err = run(capsys, "--dsn", db_url, "snapshot", "--band", str(band), "--engine", "oban")
    assert "--engine oban:" in err and "run with --engine local" in err
    with db.engine.connect() as conn:  # nothing was written on the way
        assert conn.execute(text("select to_regclass('oban_jobs')")).scalar() is None


def test_replayed_migrations_give_oban_v12(odb):
    """The fixture's table is Oban's v12: checks, indexes, defaults, no trigger left."""
    with odb.engine.connect() as conn:
        info = oban.detect(conn)
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
    assert info == oban.ObanInfo("public", 12, '"public"."oban_job_state"')
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
    assert indexes == {
        "oban_jobs_pkey",
        "oban_jobs_args_index",
        "oban_jobs_meta_index",
        "oban_jobs_state_queue_priority_scheduled_at_id_index",
    }
    assert triggers == 0
    assert enum == list(oban.STATES)
    assert defaults["errors"] == "ARRAY[]::jsonb[]"
    assert defaults["args"] == "'{}'::jsonb" and defaults["meta"] == "'{}'::jsonb"
    assert defaults["inserted_at"] == defaults["scheduled_at"] == "timezone('UTC'::text, now())"


def test_detect_keeps_to_the_search_path(fresh_db):
    install_oban(fresh_db, prefix="private")
    with fresh_db.engine.connect() as conn:
        assert oban.detect(conn) is None
        with pytest.raises(oban.ObanUnavailable, match="search path: public"):
            oban.require(conn)
        conn.execute(text("set search_path = public, private"))
        info = oban.detect(conn)
        assert info.schema == "private" and info.version == 12
        assert info.table == '"private".oban_jobs'
        assert info.insert_channel == "private.oban_insert"
        conn.execute(text("reset search_path"))


def test_detect_names_missing_columns_of_an_old_oban(fresh_db):
    with fresh_db.engine.begin() as conn:
        for statement in migration_sql()[:8]:  # v01 only
            conn.exec_driver_sql(statement.replace("%", "%%"))
    with fresh_db.engine.connect() as conn:
        info = oban.detect(conn)
        assert not info.usable
        with pytest.raises(
            oban.ObanUnavailable,
            match="lacks columns priority, attempted_by, tags, meta, discarded_at, cancelled_at",
        ):
            oban.require(conn)


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


def oban_reference_insert(database, worker: str, args: dict) -> int:
    """What Ecto's Repo.insert of ``Worker.new(args, queue: :targets, max_attempts: 3)`` sends:
    the Job struct's non-nil fields; the timestamps come from the column defaults."""
    with database.engine.begin() as conn:
        return conn.execute(
            text(
                "insert into oban_jobs (state, queue, worker, args, meta, tags, errors, "
                "attempt, max_attempts, priority) values ('available', 'targets', :w, "
                "cast(:a as jsonb), '{}', '{}', '{}', 0, 3, 0) returning id"
            ),
            {"w": worker, "a": json.dumps(args)},
        ).scalar_one()


def listen(database, channel: str) -> psycopg.Connection:
    conn = psycopg.connect(libpq_url(database), autocommit=True)
    conn.execute(f'listen "{channel}"')
    return conn


def received(conn: psycopg.Connection) -> list[tuple[str, str]]:
    return [(n.channel, n.payload) for n in conn.notifies(timeout=2, stop_after=1)]


def test_enqueue_band_writes_the_row_oban_insert_writes(odb):
    band = a_band(odb)
    listener = listen(odb, "public.oban_insert")
    before = db_now(odb)
    queued = oban.enqueue_band(odb.engine, band)
    after = db_now(odb)
    assert queued.band_id == band and not queued.refused and queued.worker == oban.WORKER_BAND
    assert received(listener) == [("public.oban_insert", '{"queue":"targets"}')]
    listener.close()
    check_constraints_hold(odb, queued.job_id)

    ours = row(odb, queued.job_id)
    reference = row(odb, oban_reference_insert(odb, oban.WORKER_BAND, {"band_id": band}))
    same = ("id", "inserted_at", "scheduled_at")
    assert {k: v for k, v in ours.items() if k not in same} == {
        k: v for k, v in reference.items() if k not in same
    }
    assert ours["args"] == {"band_id": band}
    assert ours["state"] == "available" and ours["queue"] == "targets"
    assert (ours["attempt"], ours["max_attempts"], ours["priority"]) == (0, 3, 0)
    assert ours["errors"] == [] and ours["tags"] == [] and ours["meta"] == {}
    assert ours["attempted_by"] is None and ours["attempted_at"] is None
    assert ours["completed_at"] is ours["discarded_at"] is ours["cancelled_at"] is None
    assert ours["inserted_at"] == ours["scheduled_at"]
    assert before <= ours["inserted_at"] <= after  # UTC, like the column default
    assert reference["inserted_at"] == reference["scheduled_at"]


def test_enqueue_populate_marks_the_target_in_the_same_transaction(odb):
    queued = oban.enqueue_populate(odb.engine, 1)
    job = row(odb, queued.job_id)
    assert job["worker"] == oban.WORKER_POPULATE and job["args"] == {"target_id": 1}
    check_constraints_hold(odb, queued.job_id)
    with odb.engine.connect() as conn:
        status = conn.execute(text("select population_status from targets where id = 1")).scalar()
    assert status == "populating"
    with pytest.raises(oban.AlreadyQueued, match=f"already has Oban job {queued.job_id}"):
        oban.enqueue_populate(odb.engine, 1)

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
    with odb.engine.connect() as conn:
        assert conn.execute(text("select count(*) from oban_jobs")).scalar() == 0


def test_duplicate_band_jobs_are_refused_until_the_job_ends(odb):
    band = a_band(odb)
    first = oban.enqueue_band(odb.engine, band)
    for state in ("available", "scheduled", "executing", "retryable"):
        with odb.engine.begin() as conn:
            conn.execute(
                text("update oban_jobs set state = cast(:s as oban_job_state) where id = :id"),
                {"s": state, "id": first.job_id},
            )
        with pytest.raises(oban.AlreadyQueued) as refused:
            oban.enqueue_band(odb.engine, band)
        assert (refused.value.job_id, refused.value.state) == (first.job_id, state)
        assert refused.value.exit_code == 2
    with odb.engine.begin() as conn:
        conn.execute(
            text("update oban_jobs set state = 'completed' where id = :id"), {"id": first.job_id}
        )
    second = oban.enqueue_band(odb.engine, band)
    assert second.job_id != first.job_id

    # a job the application inserted with a string id counts too
    other = a_band(odb, target_id=1)
    oban_reference_insert(odb, oban.WORKER_BAND, {"band_id": str(other)})
    results = oban.enqueue_bands(odb.engine, [other, band])
    assert [(r.band_id, r.refused) for r in results] == [(other, True), (band, True)]
    assert results[1].job_id == second.job_id


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
    with odb.engine.connect() as conn:
        assert conn.execute(text("select count(*) from oban_jobs")).scalar() == 1


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
    with read_only.connect() as conn, pytest.raises(oban.ObanUnavailable, match="may not write"):
        oban.require(conn, write=True)
    read_only.dispose()
    code, _, err = run(
        capsys, "--dsn", url, "snapshot", "--band", str(band), "--engine", "oban", "--mode", "force"
    )
    assert code == 2 and "--mode force needs --engine local" in err
    code, _, err = run(capsys, "--dsn", url, "populate", "2", "--engine", "oban", "--resume")
    assert code == 2 and "--resume needs --engine local" in err
    with odb.engine.connect() as conn:
        assert conn.execute(text("select count(*) from oban_jobs")).scalar() == 0


# --- a worker runs them; qsnap shows every transition ------------------------------------------


def test_band_job_transitions_shown_by_qsnap_wait(odb, monkeypatch):
    band = a_band(odb)
    assert nulls(odb, band) > 0
    node = StandInNode(odb)
    cli = CliRun(
        monkeypatch,
        *("--dsn", url_of(odb), "snapshot", "--band", str(band), "--engine", "oban"),
        *("--wait", "--poll", "0.02"),
    )
    cli.wait_for("enqueued Oban job")
    job_id = int(cli.out.getvalue().split("enqueued Oban job ")[1].split()[0])
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


def test_spent_attempts_discard_the_job_and_qsnap_exits_1(odb, monkeypatch, capsys):
    band = a_band(odb)
    node = StandInNode(odb)
    queued = oban.enqueue_band(odb.engine, band)
    node.fail[queued.job_id] = "snapshot worker crashed"
    cli = CliRun(
        monkeypatch,
        *("--dsn", url_of(odb), "snapshot", "--target", "2", "--engine", "oban", "--wait"),
        *("--poll", "0.02"),
    )
    cli.wait_for(f"band {band}: already queued as Oban job {queued.job_id} (available)")
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
    assert [e["attempt"] for e in listed["jobs"][0]["errors"]] == [1, 2, 3]
    assert listed["jobs"][0]["node"] == "qlarius@worker-1"


def test_populate_on_oban_follows_the_band_jobs_it_makes(odb, monkeypatch):
    node = StandInNode(odb, node="qlarius@worker-2")
    cli = CliRun(
        monkeypatch,
        *("--dsn", url_of(odb), "populate", "2", "--engine", "oban", "--wait", "--poll", "0.02"),
    )
    cli.wait_for("target 2: enqueued Oban job")
    with odb.engine.connect() as conn:
        status = conn.execute(text("select population_status from targets where id = 2")).scalar()
    assert status == "populating"
    (populate,) = node.fetch()
    cli.wait_for(f"job {populate['id']} (target 2): available -> executing")
    node.perform(populate)
    cli.wait_for(f"job {populate['id']} (target 2): executing -> completed")
    assert node.drain() >= 1
    assert cli.finish() == 0
    out = cli.out.getvalue()
    with odb.engine.connect() as conn:
        band_ids = outermost_first(conn, 2)
    for band in band_ids:
        # seen in the poll that saw the populate job end; the drain is not paced to the polls
        assert f"(band {band}): available\n" in out
        assert re.search(rf"\(band {band}\): (available|executing) -> completed", out), out
        assert f"(band {band}): completed\n" in out
        assert nulls(odb, band) == 0
    assert out.rstrip().endswith("target 2 is now populated")


def test_backfill_on_oban_enqueues_bands_with_missing_snapshots(odb, capsys):
    url = url_of(odb)
    code, _, err = run(capsys, "--dsn", url, "backfill", "--yes", "--engine", "oban")
    assert code == 2 and "--engine oban fixes missing snapshots only" in err
    code, out, err = run(
        capsys, "--dsn", url, "backfill", "--yes", "--include", "missing", "--engine", "oban"
    )
    assert code == 0, err
    with odb.engine.connect() as conn:
        missing = set(
            conn.execute(
                text(
                    "select distinct target_band_id from target_populations tp "
                    "join target_bands b on b.id = tp.target_band_id "
                    "where matching_tags_snapshot is null"
                )
            ).scalars()
        )
        queued = {
            int(a["band_id"]) for a in conn.execute(text("select args from oban_jobs")).scalars()
        }
    assert queued == missing and out.count("enqueued Oban job") == len(missing)
    code, out, _ = run(
        capsys,
        *("--dsn", url, "backfill", "--yes", "--include", "missing", "--engine", "oban", "--json"),
    )
    report = json.loads(out)
    assert code == 0 and all(e["refused"] for e in report["enqueued"])
    assert len(report["enqueued"]) == len(missing)


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


def test_retry_is_oban_retry_job(odb):
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
    cancelled = oban.enqueue_band(odb.engine, a_band(odb, target_id=1))
    oban.cancel_job(odb.engine, cancelled.job_id)
    live = oban.enqueue_band(odb.engine, cancelled.band_id)
    with pytest.raises(oban.AlreadyQueued, match=f"Oban job {live.job_id} \\(available\\)"):
        oban.retry_job(odb.engine, cancelled.job_id)
    oban.cancel_job(odb.engine, live.job_id)
    again = oban.retry_job(odb.engine, cancelled.job_id)
    assert again.state == "available" and again.max_attempts == 3 and again.cancelled_at is None
    with pytest.raises(UsageError, match="Oban job 987654 does not exist"):
        oban.retry_job(odb.engine, 987654)


@pytest.mark.parametrize("state", ["available", "scheduled", "retryable"])
def test_cancel_is_oban_cancel_job(odb, state):
    queued = oban.enqueue_band(odb.engine, a_band(odb))
    with odb.engine.begin() as conn:
        conn.execute(
            text("update oban_jobs set state = cast(:s as oban_job_state) where id = :id"),
            {"s": state, "id": queued.job_id},
        )
    twin = clone(odb, queued.job_id)
    before = db_now(odb)
    outcome = oban.cancel_job(odb.engine, queued.job_id)
    oban_cancel_job(odb, twin)
    assert outcome == oban.CancelOutcome(queued.job_id, False, "cancelled")
    ours, theirs = row(odb, queued.job_id), row(odb, twin)
    assert comparable(ours, drop=("cancelled_at",)) == comparable(theirs, drop=("cancelled_at",))
    assert ours["state"] == "cancelled" and ours["cancelled_at"] >= before
    check_constraints_hold(odb, queued.job_id)
    with pytest.raises(UsageError, match="is already cancelled: nothing to cancel"):
        oban.cancel_job(odb.engine, queued.job_id)


def test_cancelling_an_executing_job_only_signals_its_node(odb):
    queued = oban.enqueue_band(odb.engine, a_band(odb))
    StandInNode(odb).fetch()
    before = row(odb, queued.job_id)
    assert before["state"] == "executing"
    listener = listen(odb, "public.oban_signal")
    outcome = oban.cancel_job(odb.engine, queued.job_id)
    assert outcome.requested and "asked its node to kill it" in outcome.text
    assert received(listener) == [
        ("public.oban_signal", f'{{"action":"pkill","job_id":{queued.job_id}}}')
    ]
    listener.close()
    assert row(odb, queued.job_id) == before


# --- the pending view ---------------------------------------------------------------------------


def test_oban_jobs_lists_filters_and_counts(odb, capsys):
    url = url_of(odb)
    bands = [a_band(odb, t) for t in (1, 2, 3)]
    made = [oban.enqueue_band(odb.engine, b).job_id for b in bands]
    populate = oban.enqueue_populate(odb.engine, 4).job_id
    oban_reference_insert(odb, "Qlarius.Jobs.SendOffersWorker", {"offer_id": 1})
    oban.cancel_job(odb.engine, made[0])
    with odb.engine.connect() as conn:
        info = oban.require(conn)
        assert oban.state_counts(conn, info) == {
            **dict.fromkeys(oban.STATES, 0),
            "available": 3,
            "cancelled": 1,
        }
        assert [j.id for j in oban.list_jobs(conn, info, states=["available"])] == [
            populate,
            made[2],
            made[1],
        ]
        assert [j.id for j in oban.list_jobs(conn, info, workers=[oban.WORKER_POPULATE])] == [
            populate
        ]
        assert len(oban.list_jobs(conn, info, workers=None)) == 5
        with pytest.raises(UsageError, match="unknown job state 'done'"):
            oban.list_jobs(conn, info, states=["done"])
        progress = oban.band_progress(conn, bands)
    for band in bands:
        assert progress[band].missing == nulls(odb, band) > 0

    code, out, err = run(capsys, "--dsn", url, "oban-jobs")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == (
        "available: 3  scheduled: 0  executing: 0  retryable: 0  completed: 0  "
        "discarded: 0  cancelled: 1"
    )
    assert lines[1].split()[:5] == ["id", "state", "worker", "args", "attempt"]
    assert f"{populate}" in lines[3] and "populate" in lines[3] and "target 4" in lines[3]
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


def test_wait_gives_up_at_the_timeout_and_the_job_stays_queued(odb, capsys):
    band = a_band(odb)
    code, out, err = run(
        capsys,
        *("--dsn", url_of(odb), "snapshot", "--band", str(band), "--engine", "oban"),
        *("--wait", "--timeout", "0.3", "--poll", "0.05"),
    )
    assert code == 1 and "stopped waiting after 0.3s; the jobs go on" in err
    job_id = int(out.split("enqueued Oban job ")[1].split()[0])
    assert f"job {job_id} (band {band}): available" in out
    assert row(odb, job_id)["state"] == "available"
    code, out, err = run(
        capsys, "--dsn", url_of(odb), "snapshot", "--band", str(band), "--engine", "oban"
    )
    assert code == 2 and f"band {band} already has Oban job {job_id} (available)" in err


def test_a_target_populating_on_the_workers_is_not_stuck(odb):
    from qsnap_gui.engine.targets import list_targets

    queued = oban.enqueue_populate(odb.engine, 1)
    with odb.engine.connect() as conn:
        assert {t.id: t.stuck for t in list_targets(conn)}[1] is False
    with odb.engine.begin() as conn:
        conn.execute(
            text("update oban_jobs set state = 'discarded', discarded_at = now() where id = :j"),
            {"j": queued.job_id},
        )
    with odb.engine.connect() as conn:
        assert {t.id: t.stuck for t in list_targets(conn)}[1] is True
