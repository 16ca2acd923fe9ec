"""Force re-snapshot of one population row from the inspector, by the engine's own SQL."""

from __future__ import annotations

from sqlalchemy import Engine, text

from qsnap_gui.domain.errors import UsageError
from qsnap_gui.engine.snapshot_sql import carry_sql, snapshot_select_sql
from qsnap_gui.store.queries import carrier_tables

NOW_SQL = "date_trunc('second', clock_timestamp() at time zone 'UTC')"


def resnapshot_row(engine: Engine, population_id: int) -> dict:
    """Rewrite one population's snapshot (force), built by the engine's own SQL; one transaction.

    Writes only matching_tags_snapshot and updated_at, and carries the new value into the
    NULL snapshots of the same (me_file, band)'s offers and ad events; returns the new value.
    An orphan row (no me_file, no band, or a deleted band) is refused: it is never written.
    """
    with engine.begin() as conn:
        row = conn.execute(
            text(
                "select tp.target_band_id, tp.me_file_id, b.id from target_populations tp "
                "left join target_bands b on b.id = tp.target_band_id where tp.id = :p "
                "for update of tp"
            ),
            {"p": population_id},
        ).first()
        if row is None:
            raise UsageError(f"population {population_id} does not exist")
        band_id, me_file_id, band_row = row
        if band_id is None or me_file_id is None or band_row is None:
            what = "no band" if band_id is None else "no me_file" if me_file_id is None else None
            why = f"names {what}" if what else f"belongs to band {band_id}, which does not exist"
            raise UsageError(f"population {population_id} {why}: an orphan row, never written")
        rows_sql = (
            "select tp.id, tp.me_file_id from target_populations tp "
            "where tp.id = :pid and tp.target_band_id = :band"
        )
        value = conn.execute(
            text(
                f"""
                with s as ({snapshot_select_sql(rows_sql)}), u as (
                    update target_populations tp
                    set matching_tags_snapshot = s.snap, updated_at = {NOW_SQL}
                    from s
                    where tp.id = s.id
                    returning tp.me_file_id, tp.matching_tags_snapshot as snap
                ){carry_sql(carrier_tables(conn))}
                select snap from u
                """
            ),
            {"pid": population_id, "band": band_id},
        ).scalar_one()
    return value
