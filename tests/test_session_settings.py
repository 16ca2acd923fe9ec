"""What qsnap sets on the operator's server stays in its own sessions and transactions: after a
band job, a group job, a refresh's preview, a refresh and a backfill, every pooled connection reads the server's own
settings again, and nothing was set for the database or a role (README "What qsnap sets on your
server")."""

from __future__ import annotations

from sqlalchemy import text

from qsnap_gui.engine.backfill import Category, plan, scan
from qsnap_gui.engine.flows import refresh_population, run_backfill, snapshot_bands
from qsnap_gui.engine.preview import preview_refresh
from qsnap_gui.engine.snapshots import snapshot_band

SETTINGS = (
    "application_name",
    "synchronous_commit",
    "gin_pending_list_limit",
    "client_connection_check_interval",
    "work_mem",
    "enable_indexscan",
    "enable_nestloop",
    "enable_mergejoin",
    "cursor_tuple_fraction",
    "default_transaction_read_only",
)


def settings(conn) -> dict[str, str]:
    return {
        name: conn.execute(text("select current_setting(:n)"), {"n": name}).scalar_one()
        for name in SETTINGS
    }


def test_every_setting_is_back_to_the_servers_after_the_jobs(fresh_db):
    engine = fresh_db.engine
    with engine.connect() as conn:
        server = settings(conn)
        bands = conn.execute(
            text("select id from target_bands where target_id = 1 order by id")
        ).scalars()
        bands = list(bands)
        stored_before = conn.execute(
            text(
                "select count(*) from pg_db_role_setting s join pg_database d "
                "on d.oid = s.setdatabase where d.datname = current_database()"
            )
        ).scalar_one()
    with engine.begin() as conn:
        conn.execute(
            text("update target_populations set matching_tags_snapshot = null where id % 3 = 0")
        )
    assert snapshot_band(engine, bands[0], mode="force").rows_total > 0
    # and through writer connections, which turn nested loops off for their session
    assert snapshot_band(engine, bands[1], mode="force", split_rows=1, writers=2).rows_total > 0
    assert all(r.state.name == "SUCCEEDED" for r in snapshot_bands(engine, bands))
    with engine.connect() as conn:
        assert preview_refresh(conn, 2).bands
    refresh_population(engine, 2)
    with engine.connect() as conn:
        found = scan(conn, [1, 2], [Category.MISSING, Category.BROKEN], measure=False)
    run_backfill(engine, plan(found))

    pool = engine.pool
    held = [engine.connect() for _ in range(pool.size())]
    try:
        used = [settings(conn) for conn in held]
        stored_after = (
            held[0]
            .execute(
                text(
                    "select count(*) from pg_db_role_setting s join pg_database d "
                    "on d.oid = s.setdatabase where d.datname = current_database()"
                )
            )
            .scalar_one()
        )
    finally:
        for conn in held:
            conn.close()
    assert server["application_name"] == "qsnap"
    assert all(seen == server for seen in used), [s for s in used if s != server]
    assert stored_after == stored_before
