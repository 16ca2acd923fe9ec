"""The me_file inspector core: memberships, why-matched, next band, stale check, search, paging,
single-row re-snapshot, ``qsnap inspect``; on a world built here and on the demo data."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from sqlalchemy import event, text

from qsnap_gui import cli
from qsnap_gui.domain.codec import Shape, decode, shape_sql, to_nested
from qsnap_gui.domain.errors import UsageError
from qsnap_gui.engine.inspection import (
    band_population_page,
    escape_like,
    inspect_me_file,
    membership_json_text,
    pretty_json,
    render_text,
    resnapshot_row,
    search_me_files,
    why_lines,
)
from qsnap_gui.store.db import open_database
from qsnap_gui.store.queries import band_order
from qsnap_gui.store.schema import create_demo_schema

T0 = datetime(2025, 1, 2, 3, 4, 5)
T1 = datetime(2025, 2, 3, 4, 5, 6)

# parent id -> (name, display order, {child id: (name, display order)})
TRAITS = {
    10: ("Home Own/Rent", 1, {11: ("Own", 1), 12: ("Rent", 2)}),
    20: ("Home Zip Code", 1, {21: ("02140", 2140), 22: ("02141", 2141)}),
    30: ("Home Properties", 2, {31: ("Pool", 1), 32: ("Garage", 2), 33: ("Basement", 3)}),
    40: ("Pets", 3, {41: ("Dog", 1), 42: ("Cat", 2)}),
}
GROUPS = {  # group id -> (title, trait ids)
    100: ("Owners", [11]),
    101: ("Zip 02140 area", [21, 22]),
    102: ("Pool or garage", [31, 32]),
    103: ("Pet owners", [41, 42]),
    104: ("Nobody (no traits)", []),
    106: ("Cat or ghost", [42, 777]),  # trait 777 does not exist
}
TARGETS = {1: "Homeowners", 2: "Pet lovers", 3: "Anyone", 4: "Orphans"}
BANDS = {  # band id -> (target, is_bullseye, groups)
    201: (1, "0", [100]),
    202: (1, "0", [100, 101]),
    203: (1, "1", [100, 101, 102]),
    301: (2, "0", [103]),
    302: (2, "1", [103, 104]),
    401: (3, "1", []),
    501: (4, "1", [105, 106]),  # group 105 has trait_group_traits but no trait_groups row
    502: (4, "0", []),
}
DELETED_GROUP_TRAITS = [(10500, 105, 42), (10501, 105, 777)]  # trait 777 does not exist
ME_FILES = {
    1: "Alice O'Hara",
    2: 'Bob "100%" Real_Name',
    3: "Zoë 🐱 Émile",
    4: "alice lower",
    5: "50%_off\\x",
    6: "Stale Stan",
    7: "Nobody Nothing",
    8: "Orphan Olga",
}
TAGS = [  # (tag id, me_file, trait, value)
    (1001, 1, 11, "Own"),
    (1002, 1, 21, "02140"),
    (1003, 1, 31, "Pool"),
    (1004, 1, 41, "Dog"),
    (1011, 2, 11, "Own"),
    (1012, 2, 22, ""),
    (1013, 2, 42, "Cat"),
    (1021, 3, 11, "Own"),
    (1022, 3, 99, "orphan trait"),
    (1061, 6, 11, "Own"),
    (1062, 6, 21, "02140"),
    (1063, 6, 31, "Pool"),
    (1081, 8, 42, "Cat"),
    (1082, 8, 777, "ghost"),
]

ENV_1_203 = {
    "tags": [
        [10, "Home Own/Rent", 1, [[11, "Own", 1]]],
        [20, "Home Zip Code", 1, [[21, "02140", 2140]]],
        [30, "Home Properties", 2, [[31, "Pool", 1]]],
    ]
}
ENV_1_301 = {"tags": [[40, "Pets", 3, [[41, "Dog", 1]]]]}
POPULATIONS = {  # population id -> (band, me_file, stored snapshot as JSON text or None)
    5001: (203, 1, json.dumps(ENV_1_203)),
    5002: (301, 1, json.dumps(ENV_1_301)),
    5003: (202, 2, json.dumps(ENV_1_203["tags"][:2])),  # bare array, stale
    5004: (301, 2, None),
    5005: (401, 2, '{"tags": []}'),
    5006: (
        201,
        3,
        '{"snapshot_at": "2024-06-01T12:00:00Z", "tags": '
        '[{"trait_id": 11, "trait_name": "Own", "parent_trait_id": 10}]}',
    ),
    5007: (999, 3, "{}"),  # band deleted: an orphan row
    5008: (203, 6, json.dumps(ENV_1_203)),
    5009: (201, 4, '{"tags": "none"}'),
    5010: (501, 8, None),
}


GROUP_TRAIT_SQL = (
    "insert into trait_group_traits (id, trait_group_id, trait_id, created_at, updated_at) "
    "values (:id, :g, :t, :a, :a)"
)


def build_world(url: str) -> None:
    """Create the schema and the small world above with explicit ids and timestamps."""
    database = open_database(url, check_schema=False)
    audit = {"a": T0, "by": 1}
    try:
        with database.engine.begin() as conn:
            create_demo_schema(conn)
            for pid, (name, order, children) in TRAITS.items():
                conn.execute(
                    text(
                        "insert into traits (id, trait_name, input_type, display_order, "
                        "parent_trait_id, added_date, modified_date, added_by, modified_by) "
                        "values (:id, :n, 'Select', :o, :p, :a, :a, :by, :by)"
                    ),
                    [{"id": pid, "n": name, "o": order, "p": None, **audit}]
                    + [
                        {"id": cid, "n": cname, "o": corder, "p": pid, **audit}
                        for cid, (cname, corder) in children.items()
                    ]
                    + ([{"id": 99, "n": "Orphan", "o": 1, "p": 98, **audit}] if pid == 10 else []),
                )
            for mid, name in ME_FILES.items():
                conn.execute(
                    text(
                        "insert into me_files (id, display_name, created_at, updated_at) "
                        "values (:id, :n, :a, :a)"
                    ),
                    {"id": mid, "n": name, "a": T0},
                )
            for tag_id, mid, trait, value in TAGS:
                conn.execute(
                    text(
                        "insert into me_file_tags (id, me_file_id, trait_id, tag_value, "
                        "added_date, modified_date, added_by, modified_by) "
                        "values (:id, :m, :t, :v, :a, :a, 1, 1)"
                    ),
                    {"id": tag_id, "m": mid, "t": trait, "v": value, "a": T0},
                )
            for gid, (title, traits) in GROUPS.items():
                conn.execute(
                    text(
                        "insert into trait_groups (id, title, created_at, updated_at) "
                        "values (:id, :t, :a, :a)"
                    ),
                    {"id": gid, "t": title, "a": T0},
                )
                for i, trait in enumerate(traits):
                    conn.execute(
                        text(GROUP_TRAIT_SQL),
                        {"id": gid * 100 + i, "g": gid, "t": trait, "a": T0},
                    )
            for row_id, gid, trait in DELETED_GROUP_TRAITS:
                conn.execute(
                    text(GROUP_TRAIT_SQL),
                    {"id": row_id, "g": gid, "t": trait, "a": T0},
                )
            for tid, title in TARGETS.items():
                conn.execute(
                    text(
                        "insert into targets (id, title, population_status, created_at, "
                        "updated_at) values (:id, :t, 'populated', :a, :a)"
                    ),
                    {"id": tid, "t": title, "a": T0},
                )
            for bid, (tid, bullseye, groups) in BANDS.items():
                conn.execute(
                    text(
                        "insert into target_bands (id, target_id, title, is_bullseye, "
                        "created_at, updated_at) values (:id, :t, :title, :b, :a, :a)"
                    ),
                    {"id": bid, "t": tid, "title": f"band {bid}", "b": bullseye, "a": T0},
                )
                for gid in groups:
                    conn.execute(
                        text(
                            "insert into target_band_trait_groups (id, target_band_id, "
                            "trait_group_id, created_at, updated_at) values (:id, :b, :g, :a, :a)"
                        ),
                        {"id": bid * 1000 + gid, "b": bid, "g": gid, "a": T0},
                    )
            for pop_id, (bid, mid, snap) in POPULATIONS.items():
                conn.execute(
                    text(
                        "insert into target_populations (id, target_band_id, me_file_id, "
                        "matching_tags_snapshot, created_at, updated_at) "
                        "values (:id, :b, :m, cast(:s as jsonb), :a, :u)"
                    ),
                    {"id": pop_id, "b": bid, "m": mid, "s": snap, "a": T0, "u": T1},
                )
    finally:
        database.dispose()


@pytest.fixture(scope="module")
def world_url(create_db) -> str:
    url = create_db("inspect_world")
    build_world(url)
    return url


@pytest.fixture(scope="module")
def world(world_url):
    database = open_database(world_url)
    yield database
    database.dispose()


def inspect(db, me_file_id, band_id=None):
    with db.engine.connect() as conn:
        return inspect_me_file(conn, me_file_id, band_id=band_id)


def by_band(report):
    return {m.band_id: m for m in report.memberships}


# --- memberships and why-matched -------------------------------------------------------------


def test_memberships_labels_and_shapes(world):
    report = inspect(world, 1)
    assert report.display_name == "Alice O'Hara"
    assert report.tag_count == 4
    assert [(m.target_id, m.band_id, m.band_label, m.shape) for m in report.memberships] == [
        (1, 203, "Bullseye", "envelope"),
        (2, 301, "Ring 1", "envelope"),
    ]
    m = by_band(report)[203]
    assert m.target_title == "Homeowners"
    assert m.population_id == 5001
    assert m.updated_at == T1
    assert m.tags == ENV_1_203["tags"]
    assert m.raw == ENV_1_203


def test_why_matched_lists_exactly_the_groups_and_tags(world):
    m = by_band(inspect(world, 1))[203]
    assert [(g.group_id, g.title, g.tags) for g in m.satisfied_groups] == [
        (100, "Owners", ((11, "Own", "Own"),)),
        (101, "Zip 02140 area", ((21, "02140", "02140"),)),
        (102, "Pool or garage", ((31, "Pool", "Pool"),)),
    ]
    assert m.failed_groups == ()
    m2 = by_band(inspect(world, 2))[202]
    assert [(g.group_id, g.tags) for g in m2.satisfied_groups] == [
        (100, ((11, "Own", "Own"),)),
        (101, ((22, "02141", ""),)),
    ]


def test_next_band_names_exactly_the_failing_groups(world):
    bullseye = by_band(inspect(world, 1))[203]
    assert bullseye.is_innermost and bullseye.next_band_missing_groups is None
    ring = by_band(inspect(world, 2))[202]
    assert not ring.is_innermost
    assert (ring.next_band_id, ring.next_band_label) == (203, "Bullseye")
    assert [(g.group_id, g.title, g.traits) for g in ring.next_band_missing_groups] == [
        (102, "Pool or garage", ((31, "Pool"), (32, "Garage")))
    ]
    outer = by_band(inspect(world, 3))[201]
    assert (outer.band_label, outer.next_band_id) == ("Ring 2", 202)
    assert [g.group_id for g in outer.next_band_missing_groups] == [101]
    # Pet lovers: g103 is satisfied, only the group with no traits fails
    pets = by_band(inspect(world, 1))[301]
    assert [(g.group_id, g.traits) for g in pets.next_band_missing_groups] == [(104, ())]


def test_band_without_groups_and_orphan_rows(world):
    report = inspect(world, 2)
    anyone = by_band(report)[401]
    assert anyone.groups == () and anyone.has_tags and anyone.is_innermost
    assert anyone.shape == "envelope" and anyone.tags == []
    assert anyone.stale.up_to_date
    orphan = by_band(inspect(world, 3))[999]
    assert orphan.band_label == "(deleted band)" and orphan.target_id is None
    assert orphan.shape == "empty_object" and orphan.tags is None
    assert not orphan.stale.comparable
    text_ = render_text(inspect(world, 3))
    assert "band 999 no longer exists" in text_


def test_rows_without_band_json_null_and_a_deleted_me_file(world, world_url, capsys):
    """A NULL band, a JSON null snapshot, and a me_file id with rows but no me_files row."""
    rows = [
        (5101, None, 3, None),  # no band
        (5102, 401, 3, "null"),  # a JSON null, not SQL NULL
        (5103, 401, 77, '{"tags": []}'),  # me_file 77 has no me_files row
    ]
    with world.engine.begin() as conn:
        for pop_id, band, me_file, snap in rows:
            conn.execute(
                text(
                    "insert into target_populations (id, target_band_id, me_file_id, "
                    "matching_tags_snapshot, created_at, updated_at) "
                    "values (:id, :b, :m, cast(:s as jsonb), :a, :a)"
                ),
                {"id": pop_id, "b": band, "m": me_file, "s": snap, "a": T0},
            )
    try:
        report = inspect(world, 3)
        no_band = report.membership(5101)
        assert no_band.band_id is None and no_band.band_label == "(no band)"
        assert "names no band" in why_lines(no_band)[0]
        json_null = report.membership(5102)
        assert json_null.shape == "invalid" and json_null.broken
        assert "JSON null" in json_null.decoded.error and not json_null.stale.comparable
        assert cli.main(["--dsn", world_url, "inspect", "3", "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)["memberships"]
        assert [m["band_id"] for m in listed][-1] is None
        ghost = inspect(world, 77)
        assert not ghost.me_file_exists and ghost.display_name is None
        assert [m.population_id for m in ghost.memberships] == [5103]
        assert "no me_files row" in render_text(ghost)
        with pytest.raises(UsageError, match="orphan row"):
            resnapshot_row(world.engine, 5101)
        with pytest.raises(UsageError, match="me_file 78 does not exist"):
            inspect(world, 78)
    finally:
        with world.engine.begin() as conn:
            conn.execute(text("delete from target_populations where id between 5101 and 5103"))


def test_every_shape_decodes_and_stale_comparability(world):
    shapes = {m.population_id: m for r in (2, 3, 4) for m in inspect(world, r).memberships}
    assert shapes[5003].shape == "bare_array" and shapes[5003].tags == ENV_1_203["tags"][:2]
    assert shapes[5004].shape == "missing" and shapes[5004].tags is None
    assert shapes[5004].stale.to_json() is None
    assert "never snapshotted" in shapes[5004].stale.note
    legacy = shapes[5006]
    assert legacy.shape == "legacy_flat" and legacy.tags == [[10, None, None, [[11, "Own", None]]]]
    assert legacy.stale.comparable and not legacy.stale.up_to_date
    assert (legacy.stale.added, legacy.stale.removed, legacy.stale.changed) == ((), (), ())
    invalid = shapes[5009]
    assert invalid.shape == "invalid" and invalid.tags is None
    assert "tags" in invalid.decoded.error and invalid.raw_text == '{"tags": "none"}'
    assert invalid.stale.comparable is False and "invalid" in invalid.stale.note
    # the bare array of me_file 2 was made from another me_file's tags: stale, exactly
    bare = shapes[5003].stale
    assert not bare.up_to_date
    assert (bare.added, bare.removed, bare.changed) == (
        ((20, 22, ""),),
        ((20, 21, "02140"),),
        (),
    )


def test_deleted_groups_and_traits(world):
    m = by_band(inspect(world, 8))[501]
    assert (m.band_label, m.is_innermost, m.shape) == ("Bullseye", True, "missing")
    # the link to the deleted group 105 is ignored, as the application ignores it
    assert [(g.group_id, g.title, g.traits, g.tags) for g in m.groups] == [
        (
            106,
            "Cat or ghost",
            ((42, "Cat"), (777, None)),
            ((42, "Cat", "Cat"), (777, None, "ghost")),
        )
    ]
    # the snapshot skips the trait that no longer exists (DOMAIN.md step 1)
    assert m.stale.rebuilt == {"tags": [[40, "Pets", 3, [[42, "Cat", 2]]]]}
    assert "(deleted trait) (777) = ghost" in render_text(inspect(world, 8))
    assert resnapshot_row(world.engine, 5010) == m.stale.rebuilt
    with world.engine.begin() as conn:
        conn.execute(
            text(
                "update target_populations set matching_tags_snapshot = null, updated_at = :u "
                "where id = 5010"
            ),
            {"u": T1},
        )


def test_band_filter_and_unknown_ids(world):
    report = inspect(world, 1, band_id=301)
    assert [m.band_id for m in report.memberships] == [301]
    with pytest.raises(UsageError, match="me_file 4242 does not exist"):
        inspect(world, 4242)
    with pytest.raises(UsageError, match="me_file 1 is not in band 202"):
        inspect(world, 1, band_id=202)
    with pytest.raises(UsageError, match="band 777 does not exist"):
        inspect(world, 1, band_id=777)
    empty = inspect(world, 7)
    assert empty.memberships == () and "in no band" in render_text(empty)


def count_statements(database, fn) -> list[str]:
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(database.engine, "before_cursor_execute", count)
    try:
        fn()
    finally:
        event.remove(database.engine, "before_cursor_execute", count)
    return statements


def test_a_handful_of_queries_whatever_the_memberships(world, db):
    statements = count_statements(world, lambda: inspect(world, 1))
    assert len(statements) == 6
    # parameterised: the me_file id is bound, never spliced into the text
    assert all("%(" in s for s in statements)
    with db.engine.connect() as conn:
        busiest = conn.execute(
            text(
                "select me_file_id from target_populations group by 1 "
                "order by count(*) desc, me_file_id limit 1"
            )
        ).scalar()
    report = inspect(db, busiest)
    assert len(report.memberships) >= 3 and report.tag_count >= 20
    assert len(count_statements(db, lambda: inspect(db, busiest))) == 6


# --- stale check and re-snapshot -------------------------------------------------------------


def test_stale_after_tags_change_and_resnapshot_clears_it(world):
    before = by_band(inspect(world, 6))[203]
    assert before.stale.up_to_date and before.stale.to_json() == {
        "up_to_date": True,
        "added": [],
        "removed": [],
        "changed": [],
    }
    with world.engine.begin() as conn:
        conn.execute(text("delete from me_file_tags where id = 1063"))  # Pool gone
        conn.execute(
            text(
                "insert into me_file_tags (id, me_file_id, trait_id, tag_value, added_date, "
                "modified_date, added_by, modified_by) values "
                "(1064, 6, 32, 'Garage', :a, :a, 1, 1), "
                "(1065, 6, 33, 'Basement', :a, :a, 1, 1)"  # 33 is in no group of band 203
            ),
            {"a": T1},
        )
        conn.execute(text("update me_file_tags set tag_value = '' where id = 1062"))
    stale = by_band(inspect(world, 6))[203].stale
    assert not stale.up_to_date
    assert stale.added == ((30, 32, "Garage"),)
    assert stale.removed == ((30, 31, "Pool"),)
    assert stale.changed == ((20, 21, "02140", ""),)
    assert stale.to_json() == {
        "up_to_date": False,
        "added": [[30, 32, "Garage"]],
        "removed": [[30, 31, "Pool"]],
        "changed": [[20, 21, "02140", ""]],
    }
    assert "+ added   parent 30, trait 32: Garage" in render_text(inspect(world, 6))

    value = resnapshot_row(world.engine, 5008)
    assert value == stale.rebuilt
    after = by_band(inspect(world, 6))[203]
    assert after.stale.up_to_date and after.shape == "null_values" and not after.broken
    assert after.raw == value
    assert after.updated_at > T1 and after.updated_at.microsecond == 0
    with world.engine.connect() as conn:
        created = conn.execute(
            text("select created_at from target_populations where id = 5008")
        ).scalar()
    assert created == T0


def test_resnapshot_writes_what_the_engine_writes_and_only_that_row(world):
    with world.engine.connect() as conn:
        before = conn.execute(
            text("select id, matching_tags_snapshot, updated_at from target_populations")
        ).all()
    value = resnapshot_row(world.engine, 5004)  # NULL -> envelope
    assert value == {"tags": [[40, "Pets", 3, [[42, "Cat", 2]]]]}
    with world.engine.connect() as conn:
        after = {
            r[0]: r[1:]
            for r in conn.execute(
                text("select id, matching_tags_snapshot, updated_at from target_populations")
            )
        }
    for pop_id, snap, updated in before:
        if pop_id != 5004:
            assert after[pop_id] == (snap, updated)
    with pytest.raises(UsageError, match="population 123456 does not exist"):
        resnapshot_row(world.engine, 123456)


# --- search and population pages ------------------------------------------------------------


def search(db, q, **kw):
    with db.engine.connect() as conn:
        return search_me_files(conn, q, **kw)


def test_search_by_id_and_prefix(world):
    assert search(world, " 3 ").rows[0].display_name == "Zoë 🐱 Émile"
    assert search(world, "4242").rows == ()
    assert search(world, "99999999999999999999999").rows == ()
    rows, more = search(world, "ALICE")
    assert [r.id for r in rows] == [1, 4] and not more
    rows, more = search(world, "alice", limit=1)
    assert [r.id for r in rows] == [1] and more
    rows, more = search(world, "alice", limit=1, offset=1)
    assert [r.id for r in rows] == [4] and not more
    assert [r.id for r in search(world, "zoë 🐱").rows] == [3]
    assert [r.id for r in search(world, 'bob "100%').rows] == [2]
    assert [r.id for r in search(world, "50%_").rows] == [5]
    assert [r.id for r in search(world, "50%_off\\").rows] == [5]
    assert search(world, "%").rows == ()  # a literal percent sign, not a wildcard
    assert search(world, "_").rows == ()
    assert search(world, "alice o'").rows[0].id == 1
    assert search(world, "").rows == ()
    assert escape_like("a%b_c\\") == "a\\%b\\_c\\\\"


def test_band_population_page(world):
    with world.engine.connect() as conn:
        page = band_population_page(conn, 203)
        assert [(r.population_id, r.me_file_id, r.display_name) for r in page.rows] == [
            (5001, 1, "Alice O'Hara"),
            (5008, 6, "Stale Stan"),
        ]
        assert not page.has_more
        first = band_population_page(conn, 203, limit=1)
        assert [r.population_id for r in first.rows] == [5001] and first.has_more
        second = band_population_page(conn, 203, after_id=first.last_id, limit=1)
        assert [r.population_id for r in second.rows] == [5008] and not second.has_more
        legacy = band_population_page(conn, 201, shape="legacy_flat")
        assert [r.population_id for r in legacy.rows] == [5006]
        assert legacy.rows[0].shape == "legacy_flat" and legacy.rows[0].updated_at == T1
        assert band_population_page(conn, 201, shape=Shape.ENVELOPE).rows == ()
        with pytest.raises(UsageError, match="unknown shape"):
            band_population_page(conn, 201, shape="round")


# --- qsnap inspect ---------------------------------------------------------------------------


def test_cli_inspect_json_exact(world_url, capsys):
    assert cli.main(["--dsn", world_url, "inspect", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {
        "me_file_id": 1,
        "display_name": "Alice O'Hara",
        "me_file_exists": True,
        "memberships": [
            {
                "target_id": 1,
                "target_title": "Homeowners",
                "band_id": 203,
                "band_label": "Bullseye",
                "population_id": 5001,
                "shape": "envelope",
                "broken": False,
                "tags": ENV_1_203["tags"],
                "updated_at": "2025-02-03T04:05:06",
                "satisfied_groups": [
                    {"group_id": 100, "title": "Owners", "tags": [[11, "Own", "Own"]]},
                    {
                        "group_id": 101,
                        "title": "Zip 02140 area",
                        "tags": [[21, "02140", "02140"]],
                    },
                    {"group_id": 102, "title": "Pool or garage", "tags": [[31, "Pool", "Pool"]]},
                ],
                "next_band_missing_groups": None,
                "stale": {"up_to_date": True, "added": [], "removed": [], "changed": []},
            },
            {
                "target_id": 2,
                "target_title": "Pet lovers",
                "band_id": 301,
                "band_label": "Ring 1",
                "population_id": 5002,
                "shape": "envelope",
                "broken": False,
                "tags": ENV_1_301["tags"],
                "updated_at": "2025-02-03T04:05:06",
                "satisfied_groups": [
                    {"group_id": 103, "title": "Pet owners", "tags": [[41, "Dog", "Dog"]]}
                ],
                "next_band_missing_groups": [
                    {"group_id": 104, "title": "Nobody (no traits)", "traits": []}
                ],
                "stale": {"up_to_date": True, "added": [], "removed": [], "changed": []},
            },
        ],
    }


def test_cli_inspect_text(world_url, capsys):
    assert cli.main(["--dsn", world_url, "inspect", "2", "--band", "202"]) == 0
    out = capsys.readouterr().out
    assert "me_file 2 'Bob \"100%\" Real_Name'" in out
    assert "Ring 1 (band 202)" in out
    assert "bare array" in out
    assert "(no value)" in out
    assert "✓ group 101 'Zip 02140 area': 02141 (22) = (no value)" in out
    assert "not in Bullseye (band 203): it fails 1 of 3 groups" in out
    assert "✗ group 102 'Pool or garage': any of Pool (31), Garage (32)" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["inspect", "4242"], "me_file 4242 does not exist"),
        (["inspect", "abc"], "me_file id must be a whole number"),
        (["inspect", "1", "--band", "x"], "band id must be a whole number"),
        (["inspect", "1", "--band", "202"], "me_file 1 is not in band 202"),
    ],
)
def test_cli_inspect_usage_errors(world_url, capsys, args, message):
    assert cli.main(["--dsn", world_url, *args]) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert "Traceback" not in captured.err and captured.out == ""


# --- the demo data ----------------------------------------------------------------------------


def test_demo_labels_and_shapes_agree_with_the_core(db):
    with db.engine.connect() as conn:
        samples = conn.execute(
            text(
                f"""
                select distinct on (shape) shape, me_file_id, id, target_band_id
                from (select tp.*, {shape_sql("tp.matching_tags_snapshot")} as shape
                      from target_populations tp) p
                order by shape, id
                """
            )
        ).all()
        assert {s[0] for s in samples} == {s.value for s in Shape}
        for shape, me_file_id, pop_id, band_id in samples:
            report = inspect_me_file(conn, me_file_id)
            m = report.membership(pop_id)
            assert m is not None and m.shape == shape
            target_id = m.target_id
            labels = {b.id: b.label for b in band_order(conn, target_id)}
            assert labels[band_id] == m.band_label
            assert all(
                labels[x.band_id] == x.band_label
                for x in report.memberships
                if x.target_id == target_id
            )
            if m.readable:
                decoded = decode(m.raw)
                assert m.tags == (to_nested(decoded.parents) if m.tags is not None else None)
            assert render_text(report)
            json.dumps(report.to_json())
            # the demo's memberships follow the rules: every group of its band is satisfied
            assert all(g.satisfied for g in m.groups)
            if m.shape == "envelope":
                assert m.stale.up_to_date


def test_demo_resnapshot_equals_reference(db):
    with db.engine.connect() as conn:
        pop_id, me_file_id = conn.execute(
            text(
                "select id, me_file_id from target_populations "
                "where matching_tags_snapshot is null order by id limit 1"
            )
        ).one()
        m = inspect_me_file(conn, me_file_id).membership(pop_id)
    assert not m.stale.comparable
    value = resnapshot_row(db.engine, pop_id)
    assert value == m.stale.rebuilt
    with db.engine.connect() as conn:
        again = inspect_me_file(conn, me_file_id).membership(pop_id)
    assert again.stale.up_to_date and again.shape in ("envelope", "null_values")


# --- hostile values ---------------------------------------------------------------------------


DEEP = 10_000


def test_deep_and_huge_values_do_not_crash(world):
    with world.engine.begin() as conn:
        conn.execute(
            text(
                "update target_populations set matching_tags_snapshot = "
                "cast(repeat('[', :n) || repeat(']', :n) as jsonb) where id = 5002"
            ),
            {"n": DEEP},
        )
        conn.execute(
            text(
                """
                update target_populations set matching_tags_snapshot = jsonb_build_object(
                    'tags', jsonb_build_array(jsonb_build_array(40, 'Pets', 3,
                        (select jsonb_agg(jsonb_build_array(i, 'value number ' || i, i)
                                          order by i)
                         from generate_series(1, 400000) i))))
                where id = 5005
                """
            )
        )
        size = conn.execute(
            text(
                "select octet_length(matching_tags_snapshot::text) from target_populations "
                "where id = 5005"
            )
        ).scalar()
    assert size > 9_000_000
    report_1 = inspect(world, 1)
    deep = by_band(report_1)[301]
    assert deep.shape == "invalid" and not deep.readable
    assert "nested too deeply" in deep.decoded.error
    assert deep.raw_text.startswith("[[[[") and len(deep.raw_text) <= 64_000
    assert deep.tags is None and not deep.stale.comparable
    assert membership_json_text(deep) == deep.raw_text
    assert "nested too deeply" in render_text(report_1)
    json.dumps(report_1.to_json())
    with world.engine.connect() as conn:
        page = band_population_page(conn, 301)
    assert {r.population_id: r.shape for r in page.rows}[5002] == "invalid"

    report_2 = inspect(world, 2)
    huge = by_band(report_2)[401]
    assert huge.shape == "envelope" and len(huge.tags[0][3]) == 400_000
    assert huge.stale.comparable and len(huge.stale.removed) == 400_000
    assert len(render_text(report_2)) < 200_000
    pretty = membership_json_text(huge)
    assert pretty.count("\n") < 400_100  # one line per child entry


def test_pretty_json_keeps_child_entries_on_one_line():
    assert pretty_json(ENV_1_301) == (
        '{\n  "tags": [\n    [40, "Pets", 3, [\n      [41, "Dog", 1]\n    ]]\n  ]\n}'
    )
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    assert pretty_json(deep, "RAW") == "RAW"
