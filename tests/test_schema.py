"""The demo schema is production's (DOMAIN.md), and the generator makes every production case."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from qsnap_gui.store.db import missing_schema, open_database
from qsnap_gui.store.schema import create_demo_schema
from qsnap_gui.store.tables import OPTIONAL_COLUMNS, REQUIRED_COLUMNS
from qsnap_gui.tools.demo import DemoSpec, generate_demo
from tests.prodcases import build_production_cases
from tests.worlds import table_digests

# DOMAIN.md's table, column by column: "type [NN] [= default | nodefault | serial]".
# Types are PostgreSQL's format_type names, shortened: int, varchar(n), ts (timestamp without
# time zone), ts(n), bool, jsonb, text, smallint, numeric(p,s).
DOMAIN = {
    "traits": {
        "id": "int NN serial",
        "trait_name": "varchar(256) NN",
        "input_type": "varchar(30) NN nodefault",
        "display_order": "int NN",
        "parent_trait_id": "int",
        "is_active": "bool NN = true",
        "trait_category_id": "int",
        "max_length": "int",
        "meta_1": "varchar(255)",
        "meta_2": "varchar(255)",
        "meta_3": "varchar(255)",
        "added_date": "ts NN",
        "modified_date": "ts NN",
        "added_by": "int NN",
        "modified_by": "int NN",
    },
    "me_files": {
        "id": "int NN serial",
        "display_name": "varchar(75)",
        "user_id": "int",
        "created_at": "ts(6) NN",
        "updated_at": "ts(6) NN",
    },
    "me_file_tags": {
        "id": "int NN serial",
        "me_file_id": "int NN",
        "trait_id": "int NN",
        "tag_value": "varchar(256)",
        "added_date": "ts NN",
        "modified_date": "ts NN",
        "added_by": "int NN",
        "modified_by": "int NN",
        "customized_hash": "text",
        "add_source_context": "varchar(255)",
    },
    "targets": {
        "id": "int NN serial",
        "title": "varchar(255)",
        "description": "varchar(255)",
        "marketer_id": "int",
        "user_created_by": "int",
        "population_status": "varchar(255) = 'not_populated'::character varying",
        "last_populated_at": "ts(0)",
        "created_at": "ts NN",
        "updated_at": "ts NN",
    },
    "target_bands": {
        "id": "int NN serial",
        "target_id": "int",
        "title": "varchar(255)",
        "description": "varchar(255)",
        "is_bullseye": "varchar NN = '0'::character varying",
        "user_created_by": "int",
        "created_at": "ts NN",
        "updated_at": "ts NN",
    },
    "trait_groups": {
        "id": "int NN serial",
        "title": "varchar(255)",
        "description": "varchar(255)",
        "parent_trait_id": "int",
        "marketer_id": "int",
        "user_created_by": "int",
        "deactivated_at": "ts",
        "created_at": "ts NN",
        "updated_at": "ts NN",
    },
    "trait_group_traits": {
        "id": "int NN serial",
        "trait_group_id": "int",
        "trait_id": "int",
        "created_at": "ts NN",
        "updated_at": "ts NN",
    },
    "target_band_trait_groups": {
        "id": "int NN serial",
        "target_band_id": "int",
        "trait_group_id": "int",
        "created_at": "ts NN",
        "updated_at": "ts NN",
    },
    "target_populations": {
        "id": "int NN = nextval('target_populations_id_seq'::regclass)",
        "target_band_id": "int",
        "me_file_id": "int",
        "matching_tags_snapshot": "jsonb",
        "created_at": "ts NN = CURRENT_TIMESTAMP",
        "updated_at": "ts NN = CURRENT_TIMESTAMP",
    },
    "offers": {
        "id": "int NN serial",
        "campaign_id": "int NN",
        "me_file_id": "int NN",
        "media_run_id": "int NN",
        "media_piece_id": "int NN",
        "ad_phase_count_to_complete": "smallint NN",
        "target_band_id": "int NN",
        "offer_amt": "numeric(10,2) NN",
        "marketer_cost_amt": "numeric(10,2) NN",
        "is_payable": "bool NN = false",
        "is_throttled": "bool NN = false",
        "is_demo": "bool NN = false",
        "is_current": "bool NN = false",
        "is_jobbed": "bool NN = false",
        "matching_tags_snapshot": "jsonb",
        "created_at": "ts NN",
        "updated_at": "ts NN",
    },
    "ad_events": {
        "id": "int NN serial",
        "me_file_id": "int",
        "target_id": "int",
        "target_band_id": "int",
        "offer_id": "int",
        "campaign_id": "int",
        "media_run_id": "int",
        "media_piece_id": "int",
        "matching_tags_snapshot": "jsonb",
        "created_at": "ts NN",
        "updated_at": "ts NN",
    },
}

SHORT = {
    "int": "integer",
    "bool": "boolean",
    "ts": "timestamp without time zone",
    "varchar": "character varying",
}


def expected_column(spec: str) -> tuple[str, str, str | None]:
    """(format_type, is_nullable, default rule) of a DOMAIN spec."""
    words = spec.split(" ", 2)
    name = words[0]
    base, _, size = name.partition("(")
    if base == "ts":
        shown = f"timestamp({size} without time zone" if size else SHORT["ts"]
    else:
        shown = SHORT.get(base, base) + (f"({size}" if size else "")
    rest = spec[len(name) :].strip()
    nullable = "YES"
    if rest.startswith("NN"):
        nullable = "NO"
        rest = rest[2:].strip()
    return shown, nullable, rest or None


def columns_of(conn, tables) -> dict[tuple[str, str], tuple]:
    rows = conn.execute(
        text(
            """
            select c.table_name, c.column_name, c.data_type, c.character_maximum_length,
                   c.is_nullable, c.column_default, format_type(a.atttypid, a.atttypmod)
            from information_schema.columns c
            join pg_attribute a on a.attrelid = to_regclass(c.table_name)
                               and a.attname = c.column_name
            where c.table_schema = any(current_schemas(false)) and c.table_name = any(:t)
            """
        ),
        {"t": list(tables)},
    ).all()
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}


@pytest.fixture(scope="module")
def schema_url(create_db) -> str:
    url = create_db("schema")
    db = open_database(url, check_schema=False)
    with db.engine.begin() as conn:
        create_demo_schema(conn)
    db.dispose()
    return url


@pytest.fixture(scope="module")
def schema_db(schema_url):
    db = open_database(schema_url, check_schema=False)
    yield db
    db.dispose()


def test_every_column_has_production_type_nullability_and_default(schema_db):
    with schema_db.engine.connect() as conn:
        found = columns_of(conn, DOMAIN)
    problems = []
    for table, columns in DOMAIN.items():
        for column, spec in columns.items():
            shown, nullable, rule = expected_column(spec)
            if (table, column) not in found:
                problems.append(f"{table}.{column}: missing")
                continue
            data_type, length, is_nullable, default, formatted = found[table, column]
            if formatted != shown:
                problems.append(f"{table}.{column}: {formatted}, not {shown}")
            if is_nullable != nullable:
                problems.append(f"{table}.{column}: nullable {is_nullable}, not {nullable}")
            if shown.startswith("character varying(") and length != int(shown[18:-1]):
                problems.append(f"{table}.{column}: length {length}")
            if shown.startswith("integer") and data_type != "integer":
                problems.append(f"{table}.{column}: {data_type}")
            if rule == "nodefault" and default is not None:
                problems.append(f"{table}.{column}: default {default}, none expected")
            elif rule == "serial" and not (default or "").startswith("nextval("):
                problems.append(f"{table}.{column}: default {default}, a sequence expected")
            elif rule and rule.startswith("= ") and default != rule[2:]:
                problems.append(f"{table}.{column}: default {default}, not {rule[2:]}")
    assert problems == []


def test_no_id_is_bigint_and_no_foreign_key(schema_db):
    with schema_db.engine.connect() as conn:
        wide = conn.execute(
            text(
                "select table_name || '.' || column_name from information_schema.columns "
                "where table_schema = 'public' and data_type = 'bigint' and table_name = any(:t)"
            ),
            {"t": list(DOMAIN)},
        ).scalars()
        assert list(wide) == []
        foreign = conn.execute(
            text("select count(*) from pg_constraint where contype = 'f'")
        ).scalar_one()
    assert foreign == 0


def test_population_indexes_and_sequence(schema_db):
    with schema_db.engine.connect() as conn:
        indexes = set(
            conn.execute(
                text("select indexdef from pg_indexes where tablename = 'target_populations'")
            ).scalars()
        )
        sequence = conn.execute(
            text("select pg_get_serial_sequence('target_populations', 'id')")
        ).scalar_one()
        sequence_type = conn.execute(
            text(
                "select data_type::text from pg_sequences "
                "where sequencename = 'target_populations_id_seq'"
            )
        ).scalar_one()
    shapes = {d.split(" ON public.target_populations ", 1)[1] for d in indexes}
    assert "USING btree (target_band_id, me_file_id)" in shapes
    assert any(
        d.startswith("CREATE UNIQUE INDEX") and "(target_band_id, me_file_id)" in d for d in indexes
    )
    assert "USING gin (matching_tags_snapshot)" in shapes
    assert "USING btree (id) WHERE (matching_tags_snapshot IS NULL)" in shapes
    assert sequence == "public.target_populations_id_seq"
    assert sequence_type == "integer"


def test_offers_unique_index_and_snapshot_indexes(schema_db):
    with schema_db.engine.connect() as conn:
        indexes = set(
            conn.execute(
                text("select indexdef from pg_indexes where tablename in ('offers', 'ad_events')")
            ).scalars()
        )
    assert any(
        d.startswith("CREATE UNIQUE INDEX") and "(campaign_id, me_file_id, media_run_id)" in d
        for d in indexes
    )
    for table in ("offers", "ad_events"):
        assert (
            f"ON public.{table} USING btree (me_file_id, target_band_id) "
            "WHERE (matching_tags_snapshot IS NULL)" in " ".join(indexes)
        )


def test_required_columns_are_the_core_tables_and_offers_are_optional(schema_url, create_db):
    assert set(REQUIRED_COLUMNS) == set(DOMAIN) - {"offers", "ad_events"}
    assert set(OPTIONAL_COLUMNS) == {"offers", "ad_events"}
    for table, columns in {**REQUIRED_COLUMNS, **OPTIONAL_COLUMNS}.items():
        assert set(columns) <= set(DOMAIN[table]), table
    assert {"id", "me_file_id", "target_band_id", "matching_tags_snapshot"} <= set(
        OPTIONAL_COLUMNS["offers"]
    )
    url = create_db("no_offers")
    db = open_database(url, check_schema=False)
    try:
        with db.engine.begin() as conn:
            create_demo_schema(conn)
            conn.execute(text("drop table offers, ad_events"))
            # and a database without the columns qsnap never needs
            conn.execute(text("alter table traits drop column meta_1, drop column max_length"))
            conn.execute(text("alter table me_files drop column user_id"))
            assert missing_schema(conn) == []
            conn.execute(text("alter table targets drop column population_status"))
            assert missing_schema(conn) == ["targets.population_status"]
    finally:
        db.dispose()


def test_demo_offers_and_ad_events_per_band(db):
    with db.engine.connect() as conn:
        bands_without_offers = conn.execute(
            text(
                "select count(distinct p.target_band_id) from target_populations p "
                "join target_bands b on b.id = p.target_band_id "
                "where not exists (select 1 from offers o where o.target_band_id = b.id)"
            )
        ).scalar_one()
        offers, populations = conn.execute(
            text("select (select count(*) from offers), (select count(*) from target_populations)")
        ).one()
        kinds = dict(
            conn.execute(
                text(
                    """
                    select case when o.matching_tags_snapshot is null
                                 and p.matching_tags_snapshot is null then 'both null'
                                when o.matching_tags_snapshot is null then 'left null'
                                when o.matching_tags_snapshot = p.matching_tags_snapshot
                                 then 'copy'
                                else 'other' end, count(*)
                    from offers o join target_populations p
                      on p.me_file_id = o.me_file_id and p.target_band_id = o.target_band_id
                    group by 1
                    """
                )
            ).all()
        )
        event_kinds = dict(
            conn.execute(
                text(
                    """
                    select case when e.matching_tags_snapshot is null
                                 and o.matching_tags_snapshot is null then 'both null'
                                when e.matching_tags_snapshot is null then 'left null'
                                when e.matching_tags_snapshot = o.matching_tags_snapshot
                                 then 'copy'
                                else 'other' end, count(*)
                    from ad_events e join offers o on o.id = e.offer_id
                    group by 1
                    """
                )
            ).all()
        )
    assert bands_without_offers == 0
    assert 0.01 * populations < offers < 0.1 * populations
    assert kinds.keys() == {"both null", "left null", "copy"}
    assert event_kinds.keys() == {"both null", "left null", "copy"}


def test_demo_is_deterministic_for_a_seed(create_db):
    spec = DemoSpec(me_files=200, seed=9, zips=30, edge_cases=True)
    digests = []
    for _ in range(2):
        db = open_database(create_db("same_seed"), check_schema=False)
        try:
            generate_demo(db.engine, spec)
            digests.append(table_digests(db.engine))
        finally:
            db.dispose()
    assert "offers" in digests[0] and "ad_events" in digests[0]
    assert digests[0] == digests[1]


# Each case of DOMAIN.md, checked in the database (not taken from the generator's word):
# the query is true when the ids named for the case (:ids, also :a first and :b last) hold it.
CASE_CHECKS = {
    "untitled_target": "select bool_and(title is null) from targets where id = any(:ids)",
    "null_status_target": (
        "select bool_and(population_status is null) from targets where id = any(:ids)"
    ),
    "tied_rings": """
        select count(*) = 2 and count(distinct target_id) = 1 and bool_and(is_bullseye = '0')
               and count(distinct (select count(distinct l.trait_group_id)
                                   from target_band_trait_groups l
                                   join trait_groups g on g.id = l.trait_group_id
                                   where l.target_band_id = b.id)) = 1
        from target_bands b where id = any(:ids)""",
    "untitled_band": "select bool_and(title is null) from target_bands where id = any(:ids)",
    "deleted_group_link": """
        select exists (select 1 from target_band_trait_groups
                       where target_band_id = :a and trait_group_id = :b)
               and not exists (select 1 from trait_groups where id = :b)""",
    "duplicate_group_link": """
        select count(*) = 2 from target_band_trait_groups
        where target_band_id = :a and trait_group_id = :b""",
    "band_without_target": (
        "select bool_and(target_id is null) from target_bands where id = any(:ids)"
    ),
    "null_trait_group_links": """
        select count(*) = cardinality(cast(:ids as int[]))
        from trait_group_traits where id = any(:ids)
          and (trait_group_id is null or trait_id is null)""",
    "null_band_group_links": """
        select count(*) = cardinality(cast(:ids as int[]))
        from target_band_trait_groups where id = any(:ids)
          and (target_band_id is null or trait_group_id is null)""",
    "untitled_group": "select bool_and(title is null) from trait_groups where id = any(:ids)",
    "tied_parents": """
        select count(*) = 2 and count(distinct display_order) = 1
               and bool_and(parent_trait_id is null)
        from traits where id = any(:ids)""",
    "tied_children": """
        select count(*) = 2 and count(distinct display_order) = 1
               and count(distinct parent_trait_id) = 1 and bool_and(parent_trait_id is not null)
        from traits where id = any(:ids)""",
    "orphan_child_trait": """
        select bool_and(t.parent_trait_id is not null
                        and not exists (select 1 from traits p where p.id = t.parent_trait_id)
                        and exists (select 1 from trait_group_traits g where g.trait_id = t.id)
                        and exists (select 1 from me_file_tags m where m.trait_id = t.id))
        from traits t where id = any(:ids)""",
    "deleted_trait_in_group": """
        select exists (select 1 from trait_group_traits where trait_group_id = :a
                       and trait_id = :b)
               and exists (select 1 from me_file_tags where trait_id = :b)
               and not exists (select 1 from traits where id = :b)""",
    "null_tag_values": """
        select count(*) = cardinality(cast(:ids as int[])) and bool_and(tag_value is null)
        from me_file_tags where id = any(:ids)""",
    "empty_tag_values": """
        select count(*) = cardinality(cast(:ids as int[])) and bool_and(tag_value = '')
        from me_file_tags where id = any(:ids)""",
    "ghost_me_file": """
        select not exists (select 1 from me_files where id = :a)
               and exists (select 1 from me_file_tags where me_file_id = :a)
               and exists (select 1 from target_populations where me_file_id = :a)""",
    "nameless_me_file": (
        "select bool_and(display_name is null) from me_files where id = any(:ids)"
    ),
    "deleted_me_file": """
        select not exists (select 1 from me_files where id = :a)
               and exists (select 1 from me_file_tags where me_file_id = :a)
               and exists (select 1 from target_populations where me_file_id = :a)""",
    "deleted_band": """
        select not exists (select 1 from target_bands where id = :a)
               and exists (select 1 from target_populations where target_band_id = :a)""",
    "true_null_values_snapshot": """
        select count(*) = cardinality(cast(:ids as int[])) and bool_and(exists (
            select 1 from jsonb_array_elements(p.matching_tags_snapshot -> 'tags') e,
                          jsonb_array_elements(e -> 3) c
            join me_file_tags t on t.me_file_id = p.me_file_id and t.trait_id = (c ->> 0)::int
            where coalesce(c ->> 1, '') = '' and coalesce(t.tag_value, '') = ''))
        from target_populations p where id = any(:ids)""",
    "null_values_snapshot": """
        select count(*) = cardinality(cast(:ids as int[])) and bool_and(exists (
            select 1 from jsonb_array_elements(p.matching_tags_snapshot -> 'tags') e,
                          jsonb_array_elements(e -> 3) c
            join me_file_tags t on t.me_file_id = p.me_file_id and t.trait_id = (c ->> 0)::int
            where c -> 1 = 'null'::jsonb and t.tag_value <> ''))
        from target_populations p where id = any(:ids)""",
    "deleted_me_file_populations": """
        select count(*) = cardinality(cast(:ids as int[]))
        from target_populations p where id = any(:ids)
          and not exists (select 1 from me_files m where m.id = p.me_file_id)""",
    "json_null_snapshot": """
        select count(*) = cardinality(cast(:ids as int[]))
        from target_populations where id = any(:ids)
          and jsonb_typeof(matching_tags_snapshot) = 'null'""",
    "empty_object_snapshot": """
        select count(*) = cardinality(cast(:ids as int[]))
        from target_populations where id = any(:ids) and matching_tags_snapshot = '{}'""",
    "null_snapshot": """
        select count(*) = cardinality(cast(:ids as int[]))
        from target_populations where id = any(:ids) and matching_tags_snapshot is null""",
    "ghost_populations": """
        select count(*) = cardinality(cast(:ids as int[]))
        from target_populations p where id = any(:ids)
          and not exists (select 1 from me_files m where m.id = p.me_file_id)
          and exists (select 1 from me_file_tags t where t.me_file_id = p.me_file_id)""",
    "population_null_band": """
        select count(*) = cardinality(cast(:ids as int[]))
        from target_populations where id = any(:ids) and target_band_id is null""",
    "population_null_me_file": """
        select count(*) = cardinality(cast(:ids as int[]))
        from target_populations where id = any(:ids) and me_file_id is null""",
    "deleted_band_populations": """
        select count(*) = cardinality(cast(:ids as int[]))
        from target_populations p where id = any(:ids)
          and not exists (select 1 from target_bands b where b.id = p.target_band_id)""",
    "offer_null_with_population_null": """
        select count(*) = cardinality(cast(:ids as int[])) from offers o
        join target_populations p using (me_file_id, target_band_id)
        where o.id = any(:ids) and o.matching_tags_snapshot is null
          and p.matching_tags_snapshot is null""",
    "offer_left_null": """
        select count(*) = cardinality(cast(:ids as int[])) from offers o
        join target_populations p using (me_file_id, target_band_id)
        where o.id = any(:ids) and o.matching_tags_snapshot is null
          and p.matching_tags_snapshot is not null""",
    "offer_copied": """
        select count(*) = cardinality(cast(:ids as int[])) from offers o
        join target_populations p using (me_file_id, target_band_id)
        where o.id = any(:ids) and o.matching_tags_snapshot = p.matching_tags_snapshot""",
    "ad_event_null_with_population_null": """
        select count(*) = cardinality(cast(:ids as int[])) from ad_events e
        join target_populations p using (me_file_id, target_band_id)
        where e.id = any(:ids) and e.matching_tags_snapshot is null
          and p.matching_tags_snapshot is null""",
    "ad_event_left_null": """
        select count(*) = cardinality(cast(:ids as int[])) from ad_events e
        join target_populations p using (me_file_id, target_band_id)
        where e.id = any(:ids) and e.matching_tags_snapshot is null
          and p.matching_tags_snapshot is not null""",
    "ad_event_copied": """
        select count(*) = cardinality(cast(:ids as int[])) from ad_events e
        join target_populations p using (me_file_id, target_band_id)
        where e.id = any(:ids) and e.matching_tags_snapshot = p.matching_tags_snapshot""",
    "ad_event_without_offer": """
        select count(*) = cardinality(cast(:ids as int[])) from ad_events
        where id = any(:ids) and offer_id is null and target_band_id is not null
          and matching_tags_snapshot is null""",
    "ad_event_without_band": """
        select count(*) = cardinality(cast(:ids as int[])) from ad_events
        where id = any(:ids) and target_id is null and target_band_id is null""",
}


@pytest.fixture(scope="module")
def production(create_db):
    cases = build_production_cases(create_db("prodcases"))
    db = open_database(cases.url)
    yield cases, db
    db.dispose()


def test_production_cases_each_hold_in_the_database(production):
    cases, db = production
    assert set(cases.cases) == set(CASE_CHECKS)
    failed = []
    with db.engine.connect() as conn:
        for name, sql in CASE_CHECKS.items():
            ids = list(cases.cases[name])
            assert ids, name
            params = {"ids": ids, "a": ids[0], "b": ids[-1]}
            if not conn.execute(text(sql), params).scalar_one():
                failed.append(name)
    assert failed == []


def test_production_cases_are_small_and_not_a_demo(production):
    cases, db = production
    assert not db.is_demo
    with db.engine.connect() as conn:
        counts = conn.execute(
            text(
                "select (select count(*) from me_files), (select count(*) from target_populations),"
                " (select count(*) from offers), (select count(*) from ad_events)"
            )
        ).one()
        membership = dict(
            conn.execute(
                text(
                    "select me_file_id, target_band_id from target_populations p "
                    "join target_bands b on b.id = p.target_band_id where b.target_id = :t"
                ),
                {"t": cases.edge_target},
            ).all()
        )
    assert counts[0] < 50 and counts[1] < 200 and 0 < counts[2] < 50 and 0 < counts[3] < 50
    # the application's nesting: "loyalty only" sits in the lower-id ring of the tie
    outer, _tied = cases.cases["tied_rings"]
    assert membership[cases.one("nameless_me_file")] == outer
    assert membership[cases.one("ghost_me_file")] == cases.cases["deleted_group_link"][0]
