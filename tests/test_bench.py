"""The benchmark's strategies: the baseline port and the engine agree, the floor writes a constant."""

from __future__ import annotations

from sqlalchemy import text

from qsnap_gui.tools.bench import BENCH_TARGET, autovacuum, baseline_band, floor_band, qsnap_bands
from tests.worlds import reference_snapshots, stored_snapshots


def _bands(engine) -> list[int]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text("select id from target_bands where target_id = :t order by id"),
                {"t": BENCH_TARGET},
            ).scalars()
        )


def _null(engine, bands: list[int]) -> int:
    with engine.begin() as conn:
        return conn.execute(
            text(
                "update target_populations set matching_tags_snapshot = null "
                "where target_band_id = any(:b)"
            ),
            {"b": bands},
        ).rowcount


def test_baseline_port_and_engine_write_the_reference_and_the_floor_a_constant(fresh_db):
    engine = fresh_db.engine
    bands = _bands(engine)
    rows = _null(engine, bands)
    assert rows > 1000

    assert sum(baseline_band(engine, b) for b in bands) == rows
    with engine.connect() as conn:
        baseline = {b: stored_snapshots(conn, b) for b in bands}
        assert baseline == {b: reference_snapshots(conn, b) for b in bands}

    _null(engine, bands)
    assert qsnap_bands(engine, bands) == rows
    with engine.connect() as conn:
        assert {b: stored_snapshots(conn, b) for b in bands} == baseline

    _null(engine, bands)
    assert sum(floor_band(engine, b) for b in bands) == rows
    with engine.connect() as conn:
        written = conn.execute(
            text(
                "select matching_tags_snapshot::text, count(*) from target_populations "
                "where target_band_id = any(:b) group by 1"
            ),
            {"b": bands},
        ).all()
    assert written == [('{"tags": []}', rows)]


def test_autovacuum_is_off_while_benchmarking_and_restored_after(fresh_db):
    engine = fresh_db.engine
    options = text("select reloptions from pg_class where oid = 'target_populations'::regclass")
    autovacuum(engine, False)
    with engine.connect() as conn:
        assert conn.execute(options).scalar() == ["autovacuum_enabled=off"]
    autovacuum(engine, True)
    with engine.connect() as conn:
        assert conn.execute(options).scalar() is None
