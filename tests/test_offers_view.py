"""Offers and ad events in the inspector's core and ``qsnap inspect --offers``: every snapshot
shape decodes, each comparison line is exact, the 200 bound and paging, and no section where
the tables are absent or the role may not read them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sqlalchemy import text

from qsnap_gui import cli
from qsnap_gui.domain.codec import Shape
from qsnap_gui.engine import views
from qsnap_gui.engine.offers_view import (
    AD_EVENTS,
    OFFERS,
    PAGE,
    Verdict,
    carrier_json_text,
    offers_section,
)
from qsnap_gui.store.db import open_database
from tests.prodcases import build_production_cases
from tests.test_inspection import DEEP
from tests.worlds import World, load_world, table_digests

README = Path(__file__).resolve().parents[1] / "README.md"

OWN_RENT = [
    [10, "Home Own/Rent", 1, [[12, "Rent", 2]]],
    [20, "Home Zip Code", 1, [[21, "02140", 2140]]],
]
POP_202 = {"tags": OWN_RENT}
OWN_OWN = {"tags": [OWN_RENT[1], [10, "Home Own/Rent", 1, [[11, "Own", 1]]]]}
LEGACY = {
    "snapshot_at": "2024-06-01T12:00:00Z",
    "tags": [
        {"trait_id": 12, "trait_name": "Rent", "parent_trait_id": 10},
        {"trait_id": 21, "trait_name": "02140", "parent_trait_id": 20},
    ],
}
BLANK_ZIP = {"tags": [OWN_RENT[0], [20, "Home Zip Code", 1, [[21, None, 2140]]]]}
PETS = {"tags": [[30, "Pets", 2, [[31, "Dog", 1]]]]}


def j(value) -> str:
    return json.dumps(value)


# (band, stored snapshot as JSON text or None, verdict, line): offers of me_file 1, ids from 1
OFFER_CASES = [
    (202, j({"tags": OWN_RENT[::-1]}), Verdict.SAME, "made from the same tags"),
    (202, j(OWN_OWN), Verdict.CHANGED, "tags changed since: +Rent, -Own"),
    (202, j(OWN_RENT), Verdict.SAME, "made from the same tags"),
    (
        202,
        None,
        Verdict.SNAPSHOT_MISSING,
        "offer snapshot missing (NULL); its population's is filled: backfill copies it",
    ),
    (
        202,
        "{}",
        Verdict.SNAPSHOT_BROKEN,
        "offer snapshot broken: empty object {} (says nothing)",
    ),
    (
        202,
        "null",
        Verdict.SNAPSHOT_BROKEN,
        "offer snapshot broken: invalid: a JSON null (not SQL NULL): looks filled but says nothing",
    ),
    (
        202,
        '{"tags": "x"}',
        Verdict.SNAPSHOT_BROKEN,
        "offer snapshot broken: invalid: tags: must be an array of parent entries, "
        'got a string ("x")',
    ),
    (202, j(LEGACY), Verdict.SAME_TAGS, "same traits (the legacy flat form holds no values)"),
    (202, j(BLANK_ZIP), Verdict.CHANGED, "tags changed since: +02140, -02140 (no value)"),
    (999, j(POP_202), Verdict.POPULATION_GONE, "population no longer exists"),
    (301, j(PETS), Verdict.POPULATION_SNAPSHOT_MISSING, "population snapshot missing (NULL)"),
    (201, j(POP_202), Verdict.POPULATION_GONE, "population no longer exists"),
    (
        203,
        j(POP_202),
        Verdict.POPULATION_SNAPSHOT_BROKEN,
        "population snapshot broken: empty object {} (says nothing)",
    ),
    (301, None, Verdict.SNAPSHOT_MISSING, "offer snapshot missing (NULL)"),
    (203, None, Verdict.SNAPSHOT_MISSING, "offer snapshot missing (NULL)"),  # population broken
]
# ad events of me_file 1: (band, snapshot, verdict, line)
EVENT_CASES = [
    (202, j(POP_202), Verdict.SAME, "made from the same tags"),
    (
        None,
        j(POP_202),
        Verdict.NO_BAND,
        "the ad event names no band: no population to compare with",
    ),
    (
        202,
        None,
        Verdict.SNAPSHOT_MISSING,
        "ad event snapshot missing (NULL); its population's is filled: backfill copies it",
    ),
    (202, j({"tags": [OWN_RENT[1]]}), Verdict.CHANGED, "tags changed since: +Rent"),
]
POPULATION_SNAPSHOTS = {(202, 1): j(POP_202), (203, 1): "{}", (201, 2): j(POP_202)}


def world() -> World:
    return World(
        traits=[
            (10, "Home Own/Rent", 1, None),
            (11, "Own", 1, 10),
            (12, "Rent", 2, 10),
            (20, "Home Zip Code", 1, None),
            (21, "02140", 2140, 20),
            (30, "Pets", 2, None),
            (31, "Dog", 1, 30),
        ],
        me_files=[1, 2, 3],
        tags=[(1, 12, "Rent"), (1, 21, "02140"), (1, 31, "Dog"), (2, 11, "Own")],
        groups={100: [11, 12], 200: [21], 300: [31]},
        bands=[
            (201, 1, False, [100]),
            (202, 1, True, [100, 200]),
            (203, 3, True, []),
            (301, 2, True, [300]),
        ],
        populations=[(202, 1), (203, 1), (301, 1), (201, 2)],
        offers=[(1, band, snap) for band, snap, _v, _l in OFFER_CASES] + [(2, 201, j(POP_202))],
        ad_events=[(1, band, snap) for band, snap, _v, _l in EVENT_CASES],
    )


def load(engine, w: World) -> None:
    load_world(engine, w)
    with engine.begin() as conn:
        for (band, me_file), snap in POPULATION_SNAPSHOTS.items():
            conn.execute(
                text(
                    "update target_populations set matching_tags_snapshot = cast(:s as jsonb) "
                    "where target_band_id = :b and me_file_id = :m"
                ),
                {"s": snap, "b": band, "m": me_file},
            )


@pytest.fixture(scope="module")
def world_url(create_db) -> str:
    url = create_db("offers_world")
    database = open_database(url, check_schema=False)
    try:
        load(database.engine, world())
    finally:
        database.dispose()
    return url


@pytest.fixture(scope="module")
def wdb(world_url):
    database = open_database(world_url)
    yield database
    database.dispose()


def section(database, me_file_id=1, **options):
    with database.engine.connect() as conn:
        return offers_section(conn, me_file_id, **options)


def test_every_shape_and_comparison_line_exact(wdb):
    s = section(wdb)
    offers = s.offers
    assert offers.total == len(OFFER_CASES) and not offers.has_more
    # newest first: the same created_at, so by id descending
    assert [r.id for r in offers.rows] == list(range(len(OFFER_CASES), 0, -1))
    for r in offers.rows:
        band, snap, verdict, line = OFFER_CASES[r.id - 1]
        assert (r.band_id, r.comparison.verdict, r.comparison.line) == (band, verdict, line)
        assert r.campaign_id == 1
        assert carrier_json_text(r)  # every shape has a text to show
    events = s.ad_events
    assert [r.id for r in events.rows] == [4, 3, 2, 1]
    for r in events.rows:
        band, snap, verdict, line = EVENT_CASES[r.id - 1]
        assert (r.band_id, r.comparison.verdict, r.comparison.line) == (band, verdict, line)
    assert events.rows[-1].offer_id == 1  # the offer of the same (me_file, band)
    # the world's ad events name no campaign: their offer's is shown
    assert [(r.offer_id, r.campaign_id) for r in events.rows] == [
        (1, 1),
        (1, 1),
        (None, None),
        (1, 1),
    ]


def test_shapes_labels_and_diff_entries(wdb):
    rows = {r.id: r for r in section(wdb).offers.rows}
    assert [rows[i].shape for i in range(1, 10)] == [
        Shape.ENVELOPE,
        Shape.ENVELOPE,
        Shape.BARE_ARRAY,
        Shape.MISSING,
        Shape.EMPTY_OBJECT,
        Shape.INVALID,
        Shape.INVALID,
        Shape.LEGACY_FLAT,
        Shape.NULL_VALUES,
    ]
    assert rows[1].band_label == "Bullseye" and rows[1].target_title == "target 1"
    assert rows[10].band_label == "(deleted band)" and rows[10].target_id is None
    assert rows[12].band_label == "Ring 1"
    changed = rows[2].comparison
    assert [tuple(t) for t in changed.added] == [(10, 12, "Rent", "Rent")]
    assert [tuple(t) for t in changed.removed] == [(10, 11, "Own", "Own")]
    assert changed.population_shape == "envelope" and changed.population_id is not None
    assert rows[3].tags == OWN_RENT
    assert rows[4].tags is None and carrier_json_text(rows[4]) == "null"
    assert carrier_json_text(rows[6]) == "null"  # JSON null: stored, not SQL NULL
    assert rows[6].decoded.error and rows[6].raw_text == "null"
    assert [tuple(t) for t in rows[9].comparison.removed] == [(20, 21, None, "02140 (no value)")]
    assert rows[10].comparison.population_id is None
    assert rows[8].parent_names == {10: "Home Own/Rent", 20: "Home Zip Code"}
    assert rows[1].parent_names == {}


def test_the_bound_and_paging(create_db):
    url = create_db("offers_many")
    database = open_database(url, check_schema=False)
    try:
        w = world()
        w.offers = [(3, 202, j(POP_202))] * (PAGE + 5)
        w.ad_events = []
        load(database.engine, w)
        first = section(database, 3)
        assert (first.offers.total, len(first.offers.rows), first.offers.has_more) == (
            205,
            200,
            True,
        )
        assert first.offers.rows[0].id == 205 and first.offers.rows[-1].id == 6
        assert first.ad_events.total == 0 and first.ad_events.rows == ()
        rest = section(database, 3, offset=first.offers.next_offset, kinds=[OFFERS])
        assert [r.id for r in rest.offers.rows] == [5, 4, 3, 2, 1]
        assert not rest.offers.has_more and rest.ad_events is None
        assert len(section(database, 3, limit=10_000).offers.rows) == PAGE
        only = views.offers_section(database, 3, kinds=[AD_EVENTS])
        assert only.offers is None and only.ad_events.total == 0
        for r in first.offers.rows:
            assert r.comparison.line == "population no longer exists"  # me_file 3 is in no band
    finally:
        database.dispose()


def test_no_section_without_the_tables_or_the_privilege(create_db, pg_admin_url):
    url = create_db("offers_absent")
    database = open_database(url, check_schema=False)
    role = f"qsnap_offers_{os.getpid()}"
    try:
        load(database.engine, world())
        before = table_digests(database.engine)
        with database.engine.begin() as conn:
            conn.execute(text(f"create role {role}"))
            conn.execute(text(f"grant select on all tables in schema public to {role}"))
            conn.execute(text(f"revoke select on offers from {role}"))
            conn.execute(text(f"grant select (id, me_file_id) on offers to {role}"))
            conn.execute(text(f"set local role {role}"))
            s = offers_section(conn, 1)
            assert s.offers is None and s.ad_events.total == len(EVENT_CASES)
            assert {r.campaign_id for r in s.ad_events.rows} == {None}  # offers unreadable
        with database.engine.begin() as conn:
            conn.execute(text(f"revoke select on ad_events from {role}"))
            conn.execute(text(f"set local role {role}"))
            assert offers_section(conn, 1) is None
        assert table_digests(database.engine) == before  # read-only
        with database.engine.begin() as conn:
            conn.execute(text("alter table ad_events drop column campaign_id"))
        events = section(database).ad_events
        assert [(r.offer_id, r.campaign_id) for r in events.rows][1:3] == [(1, 1), (None, None)]
        with database.engine.begin() as conn:
            conn.execute(text("alter table ad_events drop column offer_id"))
        events = section(database).ad_events
        assert {(r.offer_id, r.campaign_id) for r in events.rows} == {(None, None)}
        with database.engine.begin() as conn:
            conn.execute(text("drop table ad_events"))
        assert section(database).ad_events is None and section(database).offers.total
        with database.engine.begin() as conn:
            conn.execute(text("drop table offers"))
        assert section(database) is None
        assert views.offers_section(database, 1) is None
    finally:
        with database.engine.begin() as conn:
            conn.execute(text(f"drop owned by {role}"))
            conn.execute(text(f"drop role {role}"))
        database.dispose()


def test_cli_inspect_offers_json(world_url, capsys):
    assert cli.main(["--dsn", world_url, "inspect", "1", "--offers", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["me_file_id"] == 1 and len(out["memberships"]) == 3
    offers, events = out["offers"], out["ad_events"]
    assert (offers["total"], offers["offset"], offers["has_more"]) == (len(OFFER_CASES), 0, False)
    assert offers["rows"][-1] == {
        "id": 1,
        "campaign_id": 1,
        "target_id": 1,
        "target_title": "target 1",
        "band_id": 202,
        "band_label": "Bullseye",
        "created_at": "2025-01-01T12:00:00",
        "shape": "envelope",
        "error": None,
        "tags": OWN_RENT[::-1],
        "comparison": {
            "verdict": "same",
            "line": "made from the same tags",
            "population_id": 1,
            "population_shape": "envelope",
            "added": [],
            "removed": [],
        },
    }
    changed = next(r for r in offers["rows"] if r["id"] == 2)["comparison"]
    assert (changed["added"], changed["removed"]) == (
        [[10, 12, "Rent", "Rent"]],
        [[10, 11, "Own", "Own"]],
    )
    assert [r["comparison"]["verdict"] for r in offers["rows"]] == [
        str(c[2]) for c in reversed(OFFER_CASES)
    ]
    assert [(r["id"], r["offer_id"], r["band_id"]) for r in events["rows"]] == [
        (4, 1, 202),
        (3, 1, 202),
        (2, None, None),
        (1, 1, 202),
    ]
    assert cli.main(["--dsn", world_url, "inspect", "1", "--json"]) == 0
    assert "offers" not in json.loads(capsys.readouterr().out)


def test_cli_inspect_offers_text_band_and_offset(world_url, capsys):
    assert cli.main(["--dsn", world_url, "inspect", "1", "--offers", "--band", "202"]) == 0
    out = capsys.readouterr().out
    assert "offers: 9 (1-9 shown, newest first)" in out
    assert "ad events: 3 (1-3 shown, newest first)" in out
    assert "offer 2 · envelope · tags changed since: +Rent, -Own" in out
    assert "offer 5 · empty_object · offer snapshot broken: empty object {} (says nothing)" in out
    assert "ad event 3 · missing · ad event snapshot missing (NULL)" in out
    assert "! (no value)  [trait 21, order 2140]" in out  # the blank zip of offer 9
    args = ["--dsn", world_url, "inspect", "1", "--offers", "--offset", "12"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "offers: 15 (13-15 shown, newest first)" in out and "ad events: 4 (none shown" in out
    assert cli.main([*args[:-1], "x"]) == 2
    err = capsys.readouterr().err
    assert "--offset must be a whole number of rows (0 or more), got 'x'" in err
    assert "Traceback" not in err
    assert cli.main(["--dsn", world_url, "inspect", "1", "--offset", "5"]) == 2
    assert "--offset pages the offers and ad events: give --offers too" in capsys.readouterr().err


def test_cli_without_the_tables(create_db, capsys):
    url = create_db("offers_cli_absent")
    database = open_database(url, check_schema=False)
    try:
        load(database.engine, world())
        with database.engine.begin() as conn:
            conn.execute(text("drop table offers, ad_events"))
    finally:
        database.dispose()
    assert cli.main(["--dsn", url, "inspect", "1", "--offers", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["offers"] is None and out["ad_events"] is None
    assert cli.main(["--dsn", url, "inspect", "1", "--offers"]) == 0
    out = capsys.readouterr().out
    assert "offers and ad events: none in this database (or this role may not read them)" in out


def test_readme_example_has_the_keys_of_the_output(world_url, capsys):
    """The README's ``inspect --offers --json`` example is the shape the command prints."""
    section = README.read_text(encoding="utf-8").split("### Why was this person shown this ad?")[1]
    example = json.loads(section.split("```json", 1)[1].split("```", 1)[0])
    assert cli.main(["--dsn", world_url, "inspect", "1", "--offers", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    offers, events = out["offers"], out["ad_events"]
    assert example.keys() == offers.keys()
    for row in example["rows"]:
        assert row.keys() == offers["rows"][0].keys()
        assert row["comparison"].keys() == offers["rows"][0]["comparison"].keys()
        assert {*row.keys(), "offer_id"} == events["rows"][0].keys()
    verdicts = {str(v) for v in Verdict}
    assert {r["comparison"]["verdict"] for r in example["rows"]} <= verdicts
    for verdict in verdicts:
        assert f"| `{verdict}`" in section or f"/ `{verdict}`" in section


def test_production_cases(create_db):
    """Every offer and ad event of the production-shaped database reads, NULL ids included."""
    prod = build_production_cases(create_db("offers_prod"))
    database = open_database(prod.url)
    try:
        with database.engine.connect() as conn:
            carriers = {
                kind: dict(
                    conn.execute(
                        text(f"select id, me_file_id from {kind} where me_file_id is not null")
                    ).all()
                )
                for kind in (OFFERS, AD_EVENTS)
            }
            rows = {}
            for me_file in {m for ids in carriers.values() for m in ids.values()}:
                s = offers_section(conn, me_file)
                for kind in (OFFERS, AD_EVENTS):
                    for r in s.page(kind).rows:
                        rows[(kind, r.id)] = r
        assert {k for k in rows} == {(k, i) for k, ids in carriers.items() for i in ids}
        left_null = rows[(OFFERS, prod.one("offer_left_null"))].comparison
        assert left_null.verdict is Verdict.SNAPSHOT_MISSING
        assert left_null.line.endswith("backfill copies it")
        both_null = rows[(OFFERS, prod.one("offer_null_with_population_null"))].comparison
        assert both_null.line == "offer snapshot missing (NULL)"
        assert both_null.population_shape == "missing"
        copied = rows[(OFFERS, prod.one("offer_copied"))].comparison
        assert copied.verdict is Verdict.SAME
        no_band = rows[(AD_EVENTS, prod.one("ad_event_without_band"))]
        assert (no_band.band_id, no_band.band_label, no_band.target_id) == (None, "(no band)", None)
        assert no_band.comparison.line == "ad event snapshot missing (NULL)"
        assert rows[(AD_EVENTS, prod.one("ad_event_without_offer"))].offer_id is None
        # demo offers copy their population's snapshot, unless left NULL
        for r in rows.values():
            if r.comparison.verdict is Verdict.CHANGED:
                raise AssertionError(f"{r.kind} {r.id}: {r.comparison.line}")
    finally:
        database.dispose()


def test_deep_and_huge_snapshots(create_db):
    url = create_db("offers_deep")
    database = open_database(url, check_schema=False)
    try:
        load(database.engine, world())
        with database.engine.begin() as conn:
            conn.execute(
                text(
                    "update offers set matching_tags_snapshot = "
                    "cast(repeat('[', :n) || repeat(']', :n) as jsonb) where id = 1"
                ),
                {"n": DEEP},
            )
            conn.execute(
                text(
                    """
                    update offers set matching_tags_snapshot = jsonb_build_object(
                        'tags', jsonb_build_array(jsonb_build_array(10, 'Home Own/Rent', 1,
                            (select jsonb_agg(jsonb_build_array(i, 'v' || i, i) order by i)
                             from generate_series(1, 20000) i))))
                    where id = 2
                    """
                )
            )
        rows = {r.id: r for r in section(database).offers.rows}
        deep = rows[1]
        assert deep.shape == "invalid" and not deep.readable and deep.tags is None
        assert deep.comparison.line.startswith("offer snapshot broken: invalid: nested too deeply")
        assert carrier_json_text(deep) == deep.raw_text and len(deep.raw_text) <= 64_000
        huge = rows[2].comparison
        assert (len(huge.added), len(huge.removed)) == (2, 20_000)
        assert huge.line == (
            "tags changed since: +Rent, +02140, -v1, -v2, -v3, -v4, -v5, -v6, -v7, -v8 "
            "and 19,992 more"
        )
    finally:
        database.dispose()
