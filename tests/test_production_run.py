"""Every command, and the window's screenshot, on a database of production's exact types holding
every case found in real databases, run as the README's least-privilege role: each run ends
(bounded) with exit 0 or a documented refusal and no traceback, and afterwards every
population, offer and ad event is what DOMAIN.md says."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from qsnap_gui.store.db import open_database
from tests import reference
from tests.prodcases import build_production_cases
from tests.test_privileges import readme_grants

RUN_GUARD = 300  # seconds: only there to turn a hang into a failure


@pytest.fixture
def production(create_db, pg_admin_url, tmp_path):
    """(owner's Database, the least-privilege role's URL, the cases)."""
    url = create_db("prodrun")
    cases = build_production_cases(url)
    owner = open_database(url)
    name = owner.url.database
    role = f"qsnap_prod_{os.getpid()}"
    admin = make_url(pg_admin_url).set(database=name).render_as_string(False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'revoke all on database "{name}" from public')
        conn.execute("revoke all on schema public from public")
        conn.execute(f"create role {role} login")
        for grant in readme_grants(role, name):
            conn.execute(grant)
    yield owner, owner.url.set(username=role, password=None).render_as_string(False), cases
    owner.dispose()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity where usename = %s", (role,)
        )
        conn.execute(f"drop owned by {role}")
        conn.execute(f"drop role {role}")


def qsnap(url: str, *args: str, env: dict) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "qsnap_gui.cli", "--dsn", url, *args],
        capture_output=True,
        text=True,
        timeout=RUN_GUARD,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert "Traceback" not in proc.stdout + proc.stderr, (args, proc.stderr)
    return proc.returncode, proc.stdout, proc.stderr


def test_every_command_as_the_readme_role_ends_where_domain_says(production, tmp_path):
    owner, url, cases = production
    env = {**os.environ, "QSNAP_LOG_DIR": str(tmp_path / "logs"), "QT_QPA_PLATFORM": "offscreen"}
    with owner.engine.connect() as conn:
        targets = list(conn.execute(text("select id from targets order by id")).scalars())
        me_files = list(
            conn.execute(
                text("select distinct me_file_id from me_file_tags order by 1 limit 6")
            ).scalars()
        )
    edge = cases.edge_target
    ghost = cases.one("ghost_me_file")

    code, out, err = qsnap(url, "targets", "--json", env=env)
    assert code == 0, err
    assert {t["id"] for t in json.loads(out)} == set(targets)
    for target in targets:
        assert qsnap(url, "bands", str(target), env=env)[0] == 0
    for mode in ("missing", "repair", "force"):
        code, _out, err = qsnap(url, "snapshot", "--target", str(edge), "--mode", mode, env=env)
        assert code == 0, (mode, err)
    for target in targets:
        code, _out, err = qsnap(url, "populate", str(target), env=env)
        assert code == 0, (target, err)
    with owner.engine.begin() as conn:
        conn.execute(
            text("update targets set population_status = 'populating' where id = :t"), {"t": edge}
        )
    code, _out, err = qsnap(url, "populate", str(edge), "--resume", env=env)
    assert code == 0, err
    for me_file in [*me_files, ghost]:
        code, out, err = qsnap(url, "inspect", str(me_file), "--json", env=env)
        assert code == 0, (me_file, err)
        assert json.loads(out)["me_file_id"] == me_file
    code, out, err = qsnap(url, "backfill", "--dry-run", "--json", env=env)
    assert code == 0, err
    code, _out, err = qsnap(url, "backfill", "--yes", "--include", "missing,broken,stale", env=env)
    assert code == 0, err
    code, out, err = qsnap(
        url, "backfill", "--dry-run", "--json", "--include", "missing,broken,stale", env=env
    )
    assert code == 0, err
    totals = json.loads(out)["totals"]
    assert {k: v for k, v in totals.items() if k not in ("bands", "population") and v} == {}
    last = targets[-1]
    assert qsnap(url, "depopulate", str(last), "--yes", env=env)[0] == 0
    assert qsnap(url, "populate", str(last), env=env)[0] == 0

    shot = tmp_path / "window.png"
    proc = subprocess.run(
        [sys.executable, "-m", "qsnap_gui.ui.app", "--dsn", url, "--screenshot", str(shot)]
        + ["--target", str(edge)],
        capture_output=True,
        text=True,
        timeout=RUN_GUARD,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert shot.stat().st_size > 10_000

    with owner.engine.connect() as conn:
        for target in targets:
            stored = dict(
                conn.execute(
                    text(
                        "select tp.me_file_id, tp.target_band_id from target_populations tp "
                        "join target_bands b on b.id = tp.target_band_id "
                        "where b.target_id = :t and tp.me_file_id is not null"
                    ),
                    {"t": target},
                ).all()
            )
            assert stored == reference.membership(conn, target), target
        judged = reference.judge(conn)
        assert {j for j in judged.values() if j != "orphan"} == {"good"}
        assert "orphan" in judged.values()
        assert reference.left_null(conn) == 0
        statuses = set(conn.execute(text("select population_status from targets")).scalars())
    assert statuses == {"populated"}
