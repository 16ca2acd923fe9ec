"""Preview Refresh Population: its counts are what the refresh then does, and it writes nothing
(as the owner, with --read-only, as a browse-only role)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from sqlalchemy import Connection, text

from qsnap_gui.cli import main
from qsnap_gui.domain.codec import good_sql
from qsnap_gui.domain.errors import UsageError
from qsnap_gui.engine import population, snapshot_sql
from qsnap_gui.engine.backfill import Category, scan
from qsnap_gui.engine.flows import refresh_population
from qsnap_gui.engine.population import apply_membership, outermost_first
from qsnap_gui.engine.preview import preview_refresh, refresh_preview
from qsnap_gui.store.db import open_database
from tests.reference import membership as reference_membership
from tests.test_population import target_worlds
from tests.test_privileges import browse_only, roles  # noqa: F401 (a fixture)
from tests.worlds import World, load_world, table_digests

TARGET = 1
ORPHAN_ME_FILE = 1_999_999_999  # tags but no me_files row: still a candidate


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def pairs(conn: Connection, band_ids: list[int]) -> dict[tuple[int, int], int]:
    """(me_file, band) -> population id, of the target's rows with a me_file."""
    rows = conn.execute(
        text(
            "select me_file_id, target_band_id, id from target_populations "
            "where target_band_id = any(:b) and me_file_id is not null"
        ),
        {"b": band_ids},
    ).all()
    return {(m, b): i for m, b, i in rows}


def offers_without_pair(conn: Connection, band_ids: list[int]) -> dict[int, set[int]]:
    """Per band, the offers whose (me_file, band) has no population."""
    out: dict[int, set[int]] = {b: set() for b in band_ids}
    for offer, band in conn.execute(
        text(
            "select c.id, c.target_band_id from offers c where c.target_band_id = any(:b) "
            "and not exists (select 1 from target_populations tp where tp.me_file_id = "
            "c.me_file_id and tp.target_band_id = c.target_band_id)"
        ),
        {"b": band_ids},
    ):
        out[band].add(offer)
    return out


def members(conn: Connection, band_id: int, n: int, *, good: bool = False, skip=()) -> list[int]:
    """``n`` me_files of the band, those with offers first."""
    where = f"and {good_sql('tp.matching_tags_snapshot', 'tp.me_file_id')}" if good else ""
    return list(
        conn.execute(
            text(
                "select tp.me_file_id from target_populations tp "
                "where tp.target_band_id = :b and tp.me_file_id is not null "
                f"and tp.me_file_id <> all(:skip) {where} "
                "order by (select count(*) from offers o where o.me_file_id = tp.me_file_id "
                "and o.target_band_id = tp.target_band_id) desc, tp.me_file_id limit :n"
            ),
            {"b": band_id, "n": n, "skip": list(skip)},
        ).scalars()
    )


def copy_tags(conn: Connection, donor: int, me_file_ids: list[int]) -> None:
    """Give each me_file the donor's tags on traits it has no tag on."""
    conn.execute(
        text(
            "insert into me_file_tags (id, me_file_id, trait_id, tag_value, added_date, "
            "modified_date, added_by, modified_by) "
            "select (select max(id) from me_file_tags) + row_number() over (), m.id, "
            "t.trait_id, t.tag_value, t.added_date, t.modified_date, 1, 1 "
            "from me_file_tags t cross join unnest(cast(:ids as int[])) m(id) "
            "where t.me_file_id = :donor and not exists (select 1 from me_file_tags x "
            "where x.me_file_id = m.id and x.trait_id = t.trait_id)"
        ),
        {"donor": donor, "ids": me_file_ids},
    )


def change_tags(conn: Connection, band_ids: list[int]) -> None:
    """Me_files move in and out, leave and join; two kept me_files' snapshots go stale."""
    outer, middle, inner = band_ids[0], band_ids[-2], band_ids[-1]
    group = conn.execute(
        text(
            "select trait_group_id from target_band_trait_groups where target_band_id = :i "
            "except select trait_group_id from target_band_trait_groups "
            "where target_band_id = :m order by 1 limit 1"
        ),
        {"i": inner, "m": middle},
    ).scalar_one()
    moving_out = members(conn, inner, 4)
    conn.execute(
        text(
            "delete from me_file_tags where me_file_id = any(:m) and trait_id in "
            "(select trait_id from trait_group_traits where trait_group_id = :g)"
        ),
        {"m": moving_out, "g": group},
    )
    donor, *going_stale = members(conn, inner, 3, good=True, skip=moving_out)
    conn.execute(
        text(
            "update me_file_tags set tag_value = coalesce(tag_value, '') || '*' "
            "where me_file_id = any(:m)"
        ),
        {"m": going_stale},
    )
    outer_only = members(conn, outer, 7)
    copy_tags(conn, donor, outer_only[:4])  # move in
    conn.execute(
        text("delete from me_file_tags where me_file_id = any(:m)"), {"m": outer_only[4:]}
    )  # leave
    outsiders = list(
        conn.execute(
            text(
                "select f.id from me_files f where not exists (select 1 from "
                "target_populations tp where tp.me_file_id = f.id "
                "and tp.target_band_id = any(:b)) order by f.id limit 3"
            ),
            {"b": band_ids},
        ).scalars()
    )
    copy_tags(conn, donor, [*outsiders, ORPHAN_ME_FILE])  # join


@pytest.mark.parametrize("stale_check", ["by trait", "by lookup"])
def test_preview_counts_equal_what_the_refresh_then_does(fresh_db, stale_check, monkeypatch):
    engine = fresh_db.engine
    with engine.begin() as conn:
        band_ids = outermost_first(conn, TARGET)
        change_tags(conn, band_ids)
        if stale_check == "by lookup":  # every band checked in keyset chunks of lookups
            monkeypatch.setattr(snapshot_sql, "LOOKUP_SHARE", 1e9)
            conn.execute(text("analyze me_files"))
        else:  # every band checked in one statement
            monkeypatch.setattr(snapshot_sql, "LOOKUP_SHARE", 0)
    with engine.connect() as conn:
        before = pairs(conn, band_ids)
        offers_before = offers_without_pair(conn, band_ids)
    digests = table_digests(engine)

    with engine.connect() as conn:
        preview = preview_refresh(conn, TARGET)
    assert table_digests(engine) == digests

    result = refresh_population(engine, TARGET)
    assert result.status == "populated" and not result.failed
    with engine.connect() as conn:
        after = pairs(conn, band_ids)
        offers_after = offers_without_pair(conn, band_ids)
        stale_after = {
            r.band_id: r.stale
            for r in scan(conn, [TARGET], include=[Category.STALE], measure=False).rows
        }
    band_of_before = {m: b for m, b in before}
    band_of_after = {m: b for m, b in after}
    moved = {
        m for m in band_of_after if m in band_of_before and band_of_before[m] != band_of_after[m]
    }

    assert [b.band_id for b in preview.bands] == list(reversed(band_ids))  # label order
    assert preview.bands[0].label == "Bullseye"
    for b in preview.bands:
        kept = {p for p in before if p[1] == b.band_id and p in after}
        added = {p for p in after if p[1] == b.band_id and p not in before}
        removed = {p for p in before if p[1] == b.band_id and p not in after}
        assert (b.kept, b.added, b.removed) == (len(kept), len(added), len(removed)), b
        assert b.moved_in == len({m for m, _ in added if m in moved}), b
        assert b.moved_out == len({m for m, _ in removed if m in moved}), b
        assert b.stale == stale_after[b.band_id], b
        assert b.offers_left == len(offers_after[b.band_id]), b
        assert b.offers_by_refresh == len(offers_after[b.band_id] - offers_before[b.band_id])
        assert all(before[p] == after[p] for p in kept)  # the refresh left kept rows alone
    assert result.diff is not None
    assert (preview.kept, preview.added, preview.removed, preview.moved) == (
        result.diff.kept,
        result.diff.inserted,
        result.diff.deleted,
        result.diff.moved,
    )
    matrix: dict[tuple[int, int], int] = {}
    for m in moved:
        key = (band_of_before[m], band_of_after[m])
        matrix[key] = matrix.get(key, 0) + 1
    assert {(m.from_band, m.to_band): m.count for m in preview.moves} == matrix
    assert preview.sample and len(preview.sample) <= 20
    for s in preview.sample:
        assert (band_of_before[s.me_file_id], band_of_after[s.me_file_id]) == (
            s.from_band,
            s.to_band,
        )
    # the world changed in every way the preview tells apart
    assert preview.moved >= 8 and preview.bands[0].moved_out >= 4
    assert preview.added > preview.moved and preview.removed > preview.moved
    assert any(m == ORPHAN_ME_FILE for m, _ in after)
    assert preview.bands[0].stale >= 2
    assert sum(b.offers_by_refresh for b in preview.bands) > 0

    with engine.connect() as conn:
        again = preview_refresh(conn, TARGET)
    assert (again.added, again.removed, again.moved) == (0, 0, 0)
    assert again.kept == len(after)


def test_the_many_groups_membership_previews_the_same(db, monkeypatch):
    with db.engine.connect() as conn:
        fast = preview_refresh(conn, TARGET).to_json()
    monkeypatch.setattr(population, "MASK_BITS", 0)
    with db.engine.connect() as conn:
        assert preview_refresh(conn, TARGET).to_json() == fast


def test_cli_preview_json_and_text_write_nothing_also_read_only(db, capsys):
    url = db.url.render_as_string(hide_password=False)
    before = table_digests(db.engine)
    code, out, err = run(
        capsys, "--dsn", url, "--read-only", "populate", "1", "--preview", "--stale", "--json"
    )
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc) == {"target_id", "title", "status", "totals", "bands", "moves", "sample"}
    assert set(doc["totals"]) == {"kept", "added", "removed", "moved", "stale", "offers_left"}
    assert [b["label"] for b in doc["bands"]] == ["Bullseye", "Ring 1", "Ring 2"]
    band_keys = {
        "band_id",
        "label",
        "title",
        "kept",
        "added",
        "removed",
        "moved_in",
        "moved_out",
        "stale",
        "offers_left",
        "offers_by_refresh",
        "before",
        "after",
    }
    assert all(set(b) == band_keys for b in doc["bands"])
    assert doc["totals"]["kept"] == sum(b["kept"] for b in doc["bands"]) > 0
    assert isinstance(doc["totals"]["offers_left"], int)  # the demo has offers

    code, out, err = run(capsys, "--dsn", url, "populate", "1", "--preview", "--json")
    assert code == 0, err
    quick = json.loads(out)
    assert quick["totals"]["stale"] is None and all(b["stale"] is None for b in quick["bands"])
    for b, full in zip(quick["bands"], doc["bands"], strict=True):
        assert b | {"stale": full["stale"]} == full

    code, out, err = run(capsys, "--dsn", url, "populate", "1", "--preview")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("target 1 (") and "preview of Refresh Population" in lines[0]
    assert lines[1].split()[:4] == ["band", "id", "now", "kept"]
    assert lines[3].startswith("Bullseye") and lines[-1] == "nothing was written"
    assert "stale kept" not in lines[1]
    assert lines[-2] == "kept rows with a stale snapshot: not counted (--stale counts them)"

    code, out, err = run(capsys, "--dsn", url, "populate", "1", "--preview", "--stale")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1].split()[-5:-2] == ["after", "stale", "kept"]
    bullseye = doc["bands"][0]
    # label, id, now, kept, added, removed, moved in, moved out, after, stale kept, offers left
    assert [int(v) for v in lines[3].split()[1:]] == [
        bullseye[k]
        for k in (
            "band_id",
            *("before", "kept", "added", "removed", "moved_in", "moved_out", "after"),
            *("stale", "offers_left"),
        )
    ]
    assert "not counted" not in out and lines[-1] == "nothing was written"
    assert table_digests(db.engine) == before


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--resume"], "--preview writes nothing and runs no job: it cannot go with --resume"),
        (
            ["--engine", "oban"],
            "--preview reads the database itself: it cannot go with --engine oban",
        ),
    ],
)
def test_cli_preview_refuses_what_it_cannot_do(db, capsys, extra, message):
    url = db.url.render_as_string(hide_password=False)
    code, out, err = run(capsys, "--dsn", url, "populate", "1", "--preview", *extra)
    assert (code, out, err.strip()) == (2, "", f"qsnap: {message}")


def test_json_without_preview_is_a_usage_error(db, capsys):
    url = db.url.render_as_string(hide_password=False)
    code, out, err = run(capsys, "--dsn", url, "--read-only", "populate", "1", "--json")
    assert (code, out) == (2, "")
    assert err.strip() == "qsnap: --json goes with --preview"


def test_browse_only_role_previews_and_writes_nothing(fresh_db, roles, capsys):  # noqa: F811
    url = roles(*browse_only(fresh_db.url.database))
    with fresh_db.engine.begin() as conn:
        change_tags(conn, outermost_first(conn, TARGET))
    before = table_digests(fresh_db.engine)
    with fresh_db.engine.connect() as conn:
        as_owner = preview_refresh(conn, TARGET).to_json()
    as_role = open_database(url)
    try:
        assert refresh_preview(as_role, TARGET).to_json() == as_owner
    finally:
        as_role.dispose()
    code, out, err = run(capsys, "--dsn", url, "populate", "1", "--preview", "--stale", "--json")
    assert code == 0, err
    assert json.loads(out) == as_owner
    assert as_owner["totals"]["moved"] > 0
    assert table_digests(fresh_db.engine) == before


def test_unknown_target_and_target_without_bands(db, capsys):
    with db.engine.connect() as conn:
        with pytest.raises(UsageError, match="target 999999 does not exist"):
            preview_refresh(conn, 999_999)
        empty = conn.execute(
            text(
                "select t.id from targets t where not exists "
                "(select 1 from target_bands b where b.target_id = t.id) limit 1"
            )
        ).scalar()
    if empty is None:
        with db.engine.begin() as conn:
            empty = conn.execute(
                text(
                    "insert into targets (id, title, created_at, updated_at) "
                    "select max(id) + 1, 'no bands', now(), now() from targets returning id"
                )
            ).scalar_one()
    with db.engine.connect() as conn:
        preview = preview_refresh(conn, empty)
    assert preview.bands == [] and not preview.changes
    url = db.url.render_as_string(hide_password=False)
    code, out, _err = run(capsys, "--dsn", url, "populate", str(empty), "--preview")
    assert code == 0 and "no bands: a refresh would populate nothing" in out


@pytest.fixture(scope="module")
def scratch(create_db):
    database = open_database(create_db("previewworlds"), check_schema=False)
    yield database
    database.dispose()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(world=target_worlds())
@example(  # a me_file with rows in two bands moves to a third: one me_file moved in, not two
    world=World(
        traits=[(1, "P", 1, None), (2, "C2", 2, 1)],
        me_files=[100],
        tags=[(100, 2, "v")],
        bands=[(10, 1, False, []), (11, 1, False, []), (12, 1, True, [])],
        populations=[(10, 100), (11, 100)],
    )
)
def test_preview_equals_the_diff_on_generated_worlds(scratch, world):
    """Bands without groups or with an empty group, links to missing groups, a me_file in two
    bands of the target, tags of a me_file without a row: the preview counts what the diff does."""
    load_world(scratch.engine, world)
    with scratch.engine.connect() as conn:
        preview = preview_refresh(conn, 1)
    with scratch.engine.connect() as conn, conn.begin() as trans:
        expected = reference_membership(conn, 1)
        diff = apply_membership(conn, 1)
        trans.rollback()
    before = {(m, b) for b, m in world.populations}
    after = {(m, b) for m, b in expected.items()}
    gone, added = before - after, after - before
    moved = {m for m, _ in gone} & {m for m, _ in added}
    assert (preview.kept, preview.added, preview.removed, preview.moved) == (
        diff.kept,
        diff.inserted,
        diff.deleted,
        diff.moved,
    )
    for b in preview.bands:
        assert b.kept == len({p for p in before & after if p[1] == b.band_id})
        assert b.added == len({p for p in added if p[1] == b.band_id})
        assert b.removed == len({p for p in gone if p[1] == b.band_id})
        assert b.moved_in == len({m for m, band in added if band == b.band_id and m in moved})
        assert b.moved_out == len({m for m, band in gone if band == b.band_id and m in moved})
    matrix: dict[tuple[int, int], int] = {}
    for m, band in gone:
        if m in moved:
            key = (band, expected[m])
            matrix[key] = matrix.get(key, 0) + 1
    assert {(mv.from_band, mv.to_band): mv.count for mv in preview.moves} == matrix
    sample = [(m, band, expected[m]) for m, band in sorted(gone) if m in moved][:20]
    assert [(s.me_file_id, s.from_band, s.to_band) for s in preview.sample] == sample
