"""The window and the command line drive the same core flows: the same refresh and the same
backfill, run once through each, leave the same rows and statuses."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from qsnap_gui.cli import main
from qsnap_gui.domain.jobs import JobState
from qsnap_gui.engine import backfill as bf
from qsnap_gui.store.db import open_database
from qsnap_gui.ui.jobs import JobController
from qsnap_gui.ui.workers import WorkerPool

WAIT_MS = 120_000


def final_state(engine) -> tuple[dict, dict]:
    """Every population (band, me_file) -> snapshot, and every target's status."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "select target_band_id, me_file_id, matching_tags_snapshot from target_populations"
            )
        ).all()
        statuses = dict(conn.execute(text("select id, population_status from targets")).all())
    return {(b, m): s for b, m, s in rows}, statuses


def scramble(engine) -> None:
    """Work for both drivers: band groups changed (the membership moves), snapshots NULL."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "delete from target_band_trait_groups where id = (select min(bg.id) "
                "from target_band_trait_groups bg join target_bands b on b.id = bg.target_band_id "
                "where b.target_id = 2)"
            )
        )
        conn.execute(
            text("update target_populations set matching_tags_snapshot = null where id % 3 = 0")
        )


@pytest.fixture
def twins(create_db, demo_template):
    """Two identical scrambled copies of the demo: one for each driver."""
    made = [open_database(create_db("twin", template=demo_template)) for _ in range(2)]
    for db in made:
        scramble(db.engine)
    yield made
    for db in made:
        db.dispose()


def test_refresh_and_backfill_end_the_same_from_the_window_and_the_command_line(twins, qtbot):
    by_cli, by_window = twins
    url = by_cli.url.render_as_string(hide_password=False)
    assert main(["--dsn", url, "populate", "2"]) == 0
    assert main(["--dsn", url, "backfill", "--yes", "--include", "missing,broken"]) == 0

    controller = JobController(by_window)
    try:
        refresh = controller.submit_refresh(2)
        qtbot.waitUntil(lambda: not controller.job(refresh).active, timeout=WAIT_MS)
        assert controller.job(refresh).state is JobState.SUCCEEDED
        with by_window.engine.connect() as conn:
            scan = bf.scan(conn, None, bf.DEFAULT_INCLUDE, measure=False)
        run = controller.submit_backfill(bf.plan(scan))
        qtbot.waitUntil(lambda: not controller.job(run).active, timeout=WAIT_MS)
        assert controller.job(run).state is JobState.SUCCEEDED
    finally:
        assert controller.shutdown(WAIT_MS)

    cli_rows, cli_status = final_state(by_cli.engine)
    window_rows, window_status = final_state(by_window.engine)
    assert window_status == cli_status and cli_status[2] == "populated"
    assert window_rows == cli_rows
    with by_cli.engine.connect() as conn:
        live_bands = set(conn.execute(text("select id from target_bands")).scalars())
    assert all(s is not None for (b, _m), s in cli_rows.items() if b in live_bands)
    assert WorkerPool.running_anywhere() == []
