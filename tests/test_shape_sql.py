"""shape_sql and needs_repair_sql agree with decode, on a real PostgreSQL.

decode is given the value as psycopg reads it back from jsonb: that is what the application
sees, and it differs from the sent text for numbers such as 1e2 (jsonb keeps 100).
"""

import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from qsnap_gui.domain.codec import (
    Shape,
    decode,
    needs_repair_sql,
    same_sql,
    same_up_to_ties,
    shape_sql,
)

EXAMPLE = [
    [164, "Home Own/Rent", 1, [[166, "Rent", 2]]],
    [4, "Home Zip Code", 1, [[36566, "02140", 2140]]],
    [869, "Home Properties", 2, [[894, "Multi-story", 1], [878, "Central Heat/AC", 2]]],
]
LEGACY = [
    {"trait_id": 166, "trait_name": "Rent", "parent_trait_id": 164},
    {"trait_id": 36566, "trait_name": "02140", "parent_trait_id": 4},
]


def j(value):
    return json.dumps(value)


def tree(child=(166, "Rent", 2), parent=(164, "Home Own/Rent", 1)):
    return [[*parent, [list(child)]]]


def legacy(**changes):
    entry = {"trait_id": 166, "trait_name": "Rent", "parent_trait_id": 164, **changes}
    return j({"snapshot_at": "2024-05-01T10:00:00", "tags": [entry]})


# (json text sent to PostgreSQL, the shape both sides must give)
HAND_WRITTEN = [
    (None, Shape.MISSING),
    ("null", Shape.INVALID),
    (j({"tags": EXAMPLE}), Shape.ENVELOPE),
    (j({"tags": []}), Shape.ENVELOPE),
    (j({"tags": tree(parent=(4, "Zip", None), child=(1, "St. Louis 1.5", None))}), Shape.ENVELOPE),
    (j({"tags": [[4, "Zip", 1, []]]}), Shape.ENVELOPE),
    ('{"tags": [[1e2, "Zip", 1, [[2E0, "x", -0]]]]}', Shape.ENVELOPE),
    (j({"tags": tree(child=(10**30, "x", -(10**30)))}), Shape.ENVELOPE),
    (j(EXAMPLE), Shape.BARE_ARRAY),
    ("[]", Shape.BARE_ARRAY),
    (j(tree(child=(1, None, 1))), Shape.BARE_ARRAY),
    (j({"snapshot_at": "2024-05-01T10:00:00", "tags": LEGACY}), Shape.LEGACY_FLAT),
    (j({"snapshot_at": None, "tags": []}), Shape.LEGACY_FLAT),
    (legacy(extra=[1, 2]), Shape.LEGACY_FLAT),
    ("{}", Shape.EMPTY_OBJECT),
    (j({"tags": tree(child=(1, None, 1))}), Shape.NULL_VALUES),
    (j({"tags": tree(child=(1, "", None))}), Shape.NULL_VALUES),
    (j({"tags": EXAMPLE + tree(child=(1, "", 3.5))}), Shape.INVALID),
    ('"text"', Shape.INVALID),
    ("12", Shape.INVALID),
    ("true", Shape.INVALID),
    ("1.5", Shape.INVALID),
    ('{"tag": []}', Shape.INVALID),
    (j({"tags": [], "version": 2}), Shape.INVALID),
    (j({"tags": None}), Shape.INVALID),
    (j({"tags": "[]"}), Shape.INVALID),
    (j({"tags": {"0": 1}}), Shape.INVALID),
    (j({"tags": [None]}), Shape.INVALID),
    (j({"tags": [[]]}), Shape.INVALID),
    (j({"tags": [{"a": 1}]}), Shape.INVALID),
    (j({"tags": [[1, "a", 1]]}), Shape.INVALID),
    (j({"tags": [[1, "a", 1, [], 5]]}), Shape.INVALID),
    (j({"tags": [[1, "a", 1, {}]]}), Shape.INVALID),
    (j({"tags": [[1, "a", 1, None]]}), Shape.INVALID),
    (j({"tags": tree(parent=(3.0, "a", 1))}), Shape.INVALID),
    (j({"tags": tree(parent=(True, "a", 1))}), Shape.INVALID),
    (j({"tags": tree(parent=("1", "a", 1))}), Shape.INVALID),
    (j({"tags": tree(parent=(1, None, 1))}), Shape.INVALID),
    (j({"tags": tree(parent=(1, 7, 1))}), Shape.INVALID),
    (j({"tags": tree(parent=(1, "a", 1.0))}), Shape.INVALID),
    (j({"tags": tree(parent=(1, "a", "1"))}), Shape.INVALID),
    (j({"tags": tree(parent=(1, "a", False))}), Shape.INVALID),
    (j({"tags": tree(child=(2.0, "x", 1))}), Shape.INVALID),
    (j({"tags": tree(child=(None, "x", 1))}), Shape.INVALID),
    (j({"tags": tree(child=(2, 2140, 1))}), Shape.INVALID),
    (j({"tags": tree(child=(2, ["x"], 1))}), Shape.INVALID),
    (j({"tags": tree(child=(2, "x", 1.5))}), Shape.INVALID),
    (j({"tags": tree(child=(2, None, 0.0))}), Shape.INVALID),
    (j({"tags": [[1, "a", 1, [[2, "x"]]]]}), Shape.INVALID),
    (j({"tags": [[1, "a", 1, [[2, "x", 1, 1]]]]}), Shape.INVALID),
    (j({"tags": [[1, "a", 1, ["oops"]]]}), Shape.INVALID),
    (j(tree(parent=(1, "a", 1.0))), Shape.INVALID),
    (j([1, 2, 3]), Shape.INVALID),
    (j([[]]), Shape.INVALID),
    (j({"snapshot_at": "x"}), Shape.INVALID),
    (j({"snapshot_at": "x", "tags": {}}), Shape.INVALID),
    (j({"snapshot_at": "x", "tags": EXAMPLE}), Shape.INVALID),
    (j({"snapshot_at": "x", "tags": [None]}), Shape.INVALID),
    (j({"snapshot_at": "x", "tags": [{"trait_id": 1, "trait_name": "a"}]}), Shape.INVALID),
    (j({"snapshot_at": "x", "tags": [{"trait_id": 1, "parent_trait_id": 1}]}), Shape.INVALID),
    (legacy(trait_id=[166]), Shape.INVALID),
    (legacy(trait_id=166.0), Shape.INVALID),
    (legacy(parent_trait_id=None), Shape.INVALID),
    (legacy(parent_trait_id="164"), Shape.INVALID),
    (legacy(trait_name=None), Shape.INVALID),
    (legacy(trait_name=["Rent"]), Shape.INVALID),
]


def classify(db, json_text):
    """(SQL shape, SQL needs_repair, the value as psycopg reads it back, SQL NULL or not)."""
    sql = (
        f"select {shape_sql('s')}, {needs_repair_sql('s')}, s, s is null"
        " from (select cast(:v as jsonb) as s) x"
    )
    with db.engine.connect() as conn:
        shape, repair, value, sql_null = conn.execute(text(sql), {"v": json_text}).one()
    return shape, repair, value, sql_null


@pytest.mark.parametrize(("json_text", "expected"), HAND_WRITTEN)
def test_hand_written_values(db, json_text, expected):
    shape, repair, value, sql_null = classify(db, json_text)
    decoded = decode(value, sql_null=sql_null)
    assert decoded.shape is expected
    assert shape == expected.value
    assert repair is decoded.needs_repair


def test_every_shape_is_covered():
    assert {shape for _, shape in HAND_WRITTEN} == set(Shape)


def test_a_set_of_rows_grouped_by_shape(db):
    """As the overview runs it: evaluated row by row, grouped, and filtered for repair."""
    values = [json.loads(t) for t, _ in HAND_WRITTEN if t is not None]
    expected = Counter(decode(v, sql_null=False).shape.value for v in values)
    rows = "jsonb_array_elements(cast(:vs as jsonb)) as x(s)"
    with db.engine.connect() as conn:
        counts = conn.execute(
            text(f"select {shape_sql('x.s')}, count(*) from {rows} group by 1"), {"vs": j(values)}
        ).all()
        to_repair = conn.execute(
            text(f"select count(*) from {rows} where {needs_repair_sql('x.s')}"), {"vs": j(values)}
        ).scalar()
    assert dict(counts) == expected
    assert to_repair == sum(decode(v, sql_null=False).needs_repair for v in values)


def test_deeply_nested_and_huge_values(db):
    deep_text = "[" * 10_000 + "]" * 10_000
    big = {
        "tags": [[p, "p", p, [[p * 10 + c, "v" * 30, c] for c in range(8)]] for p in range(20_000)]
    }
    big_bad = json.loads(j(big))
    big_bad["tags"][-1][3][-1][2] = 1.5
    cases = [
        (deep_text, Shape.INVALID),
        ('{"tags": [[1, "a", 1, [[2, ' + deep_text + ", 3]]]]}", Shape.INVALID),
        (j(big), Shape.ENVELOPE),
        (j(big_bad), Shape.INVALID),
    ]
    for json_text, expected in cases:
        sql = f"select {shape_sql('s')}, {needs_repair_sql('s')} from (select cast(:v as jsonb) as s) x"
        with db.engine.connect() as conn:
            shape, repair = conn.execute(text(sql), {"v": json_text}).one()
        assert (shape, repair) == (expected.value, expected is not Shape.ENVELOPE)


# --- generated values: good trees with at most one spot spoiled, where a mismatch would hide ---

ints = st.integers(-(2**63), 2**63 - 1)
# jsonb refuses NUL and lone surrogates in strings.
chars = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
texts = st.text(chars, max_size=6)
tag_values = st.one_of(st.text(chars, min_size=1, max_size=6), texts, st.none())
scalars = (
    st.none()
    | st.booleans()
    | ints
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-3, 3).map(float)
    | texts
    | st.sampled_from(["", "1.5", "St. Louis"])
)
anything = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=10,
)
good_children = st.lists(
    st.tuples(ints, tag_values, st.none() | ints).map(list), min_size=1, max_size=3
)
good_trees = st.lists(
    st.tuples(ints, texts, st.none() | ints, good_children).map(list), min_size=1, max_size=3
)
good_legacy = st.lists(
    st.fixed_dictionaries(
        {"trait_id": ints, "trait_name": texts, "parent_trait_id": ints},
        optional={"extra": anything},
    ),
    min_size=1,
    max_size=3,
)


def _spots(value, path=()):
    """Every place inside value (a tree or a legacy list) that a spoiler can replace."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return []
    return [p for key, item in items for p in [(*path, key), *_spots(item, (*path, key))]]


@st.composite
def spoiled(draw, good):
    """A good value, or one with a single item replaced or removed."""
    value = draw(good)
    how = draw(st.sampled_from(["keep", "replace", "remove"]))
    if how == "keep":
        return value
    *parent_path, key = draw(st.sampled_from(_spots(value)))
    parent = value
    for step in parent_path:
        parent = parent[step]
    if how == "replace":
        parent[key] = draw(anything)
    else:
        del parent[key]
    return value


trees = spoiled(good_trees)
values = st.one_of(
    anything,
    trees,
    st.just([]),
    st.just({}),
    st.fixed_dictionaries({"tags": trees}),
    st.fixed_dictionaries({"tags": st.just([])}, optional={"x": anything}),
    st.fixed_dictionaries({"tags": trees}, optional={"snapshot_at": anything, "x": anything}),
    st.fixed_dictionaries({"snapshot_at": anything}, optional={"tags": spoiled(good_legacy)}),
)


@settings(max_examples=200, deadline=None)
@given(values)
def test_generated_values(db, value):
    shape, repair, read_back, sql_null = classify(db, j(value))
    decoded = decode(read_back, sql_null=sql_null)
    assert shape == decoded.shape.value
    assert repair is decoded.needs_repair


# --- equal up to tie order: same_sql against codec.same_up_to_ties ---------------------------

tie_orders = st.none() | st.integers(0, 2)
tie_kids = st.lists(
    st.tuples(st.integers(1, 3), st.sampled_from(["a", "b", "", None]), tie_orders).map(list),
    max_size=4,
)
tie_trees = st.lists(
    st.tuples(st.integers(1, 3), st.sampled_from(["P", "Q"]), tie_orders, tie_kids).map(list),
    max_size=4,
)


@st.composite
def tree_pairs(draw):
    """A tree and the same tree shuffled at both levels, or another tree."""
    a = draw(tie_trees)
    if draw(st.booleans()):
        return a, draw(tie_trees)
    return a, [[p[0], p[1], p[2], draw(st.permutations(p[3]))] for p in draw(st.permutations(a))]


def same_in_sql(db, stored, rebuilt) -> bool:
    sql = f"select {same_sql('cast(:a as jsonb)', 'cast(:b as jsonb)')}"
    with db.engine.connect() as conn:
        return conn.execute(text(sql), {"a": stored, "b": rebuilt}).scalar_one()


@settings(max_examples=150, deadline=None)
@given(tree_pairs())
def test_same_sql_agrees_with_the_codec(db, pair):
    a, b = pair
    expected = same_up_to_ties(decode({"tags": a}).parents, decode({"tags": b}).parents)
    assert same_in_sql(db, j({"tags": a}), j({"tags": b})) is expected


@pytest.mark.parametrize(
    "stored",
    [
        None,
        "null",
        "{}",
        j(EXAMPLE),  # the same tree, bare
        j({"snapshot_at": "x", "tags": LEGACY}),
        '{"tags": [[164, "Home Own/Rent", 1.0, [[166, "Rent", 2]]]]}',  # 1.0 is not 1
    ],
)
def test_only_an_envelope_can_be_the_same(db, stored):
    rebuilt = j({"tags": [[164, "Home Own/Rent", 1, [[166, "Rent", 2]]]]})
    assert same_in_sql(db, stored, rebuilt) is False
    assert same_in_sql(db, rebuilt, rebuilt) is True
