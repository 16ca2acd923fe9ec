"""The snapshot codec: every shape, exact error lines, the building rules, and never crashing."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsnap_gui.domain.codec import (
    BROKEN_SHAPES,
    SHAPES,
    BandParent,
    ChildTag,
    Decoded,
    ParentTrait,
    Shape,
    TagRow,
    TraitInfo,
    band_metadata,
    blank_entries_wrong,
    build_snapshot,
    canonical,
    decode,
    encode,
    is_broken,
    same_up_to_ties,
    to_nested,
)

# DOMAIN.md's example, verbatim.
EXAMPLE = json.loads(
    """
[[164, "Home Own/Rent", 1, [[166, "Rent", 2]]],
 [4, "Home Zip Code", 1, [[36566, "02140", 2140]]],
 [869, "Home Properties", 2, [[894, "Multi-story", 1], [878, "Central Heat/AC", 2], [882, "Fireplace - Gas", 2]]]]
"""
)
EXAMPLE_TREE = (
    ParentTrait(164, "Home Own/Rent", 1, (ChildTag(166, "Rent", 2),)),
    ParentTrait(4, "Home Zip Code", 1, (ChildTag(36566, "02140", 2140),)),
    ParentTrait(
        869,
        "Home Properties",
        2,
        (
            ChildTag(894, "Multi-story", 1),
            ChildTag(878, "Central Heat/AC", 2),
            ChildTag(882, "Fireplace - Gas", 2),
        ),
    ),
)


def with_zip_value(value):
    tags = json.loads(json.dumps(EXAMPLE))
    tags[1][3][0][1] = value
    return tags


def test_shape_names_and_order():
    assert [s.value for s in SHAPES] == [
        "missing",
        "envelope",
        "bare_array",
        "legacy_flat",
        "empty_object",
        "null_values",
        "invalid",
    ]
    assert set(BROKEN_SHAPES) == set(SHAPES) - {Shape.MISSING, Shape.ENVELOPE}


def test_missing():
    assert decode(None) == Decoded(Shape.MISSING)
    assert decode(None).needs_repair


def test_envelope():
    decoded = decode({"tags": EXAMPLE})
    assert decoded == Decoded(Shape.ENVELOPE, EXAMPLE_TREE)
    assert not decoded.needs_repair


def test_empty_envelope_means_checked_nothing_matched():
    assert decode({"tags": []}) == Decoded(Shape.ENVELOPE, ())


def test_bare_array():
    decoded = decode(EXAMPLE)
    assert decoded == Decoded(Shape.BARE_ARRAY, EXAMPLE_TREE)
    assert decoded.needs_repair
    assert decode([]) == Decoded(Shape.BARE_ARRAY, ())


@pytest.mark.parametrize("blank", [None, ""])
def test_null_values(blank):
    decoded = decode({"tags": with_zip_value(blank)})
    expected_zip = ParentTrait(4, "Home Zip Code", 1, (ChildTag(36566, blank, 2140),))
    assert decoded == Decoded(Shape.NULL_VALUES, (EXAMPLE_TREE[0], expected_zip, EXAMPLE_TREE[2]))
    assert decoded.needs_repair
    assert decoded.parents[1].children[0].is_blank


def test_blank_value_in_a_bare_array_stays_a_bare_array():
    assert decode(with_zip_value(None)).shape is Shape.BARE_ARRAY


def test_empty_object():
    assert decode({}) == Decoded(Shape.EMPTY_OBJECT)
    assert decode({}).needs_repair


def test_legacy_flat_is_regrouped_by_parent_in_first_seen_order():
    value = {
        "snapshot_at": "2024-05-01T10:00:00Z",
        "tags": [
            {"trait_id": 166, "trait_name": "Rent", "parent_trait_id": 164},
            {"trait_id": 36566, "trait_name": "02140", "parent_trait_id": 4},
            {"trait_id": 165, "trait_name": "Own", "parent_trait_id": 164, "extra": 1},
        ],
    }
    assert decode(value) == Decoded(
        Shape.LEGACY_FLAT,
        (
            ParentTrait(164, None, None, (ChildTag(166, "Rent", None), ChildTag(165, "Own", None))),
            ParentTrait(4, None, None, (ChildTag(36566, "02140", None),)),
        ),
    )
    assert decode({"snapshot_at": None, "tags": []}) == Decoded(Shape.LEGACY_FLAT, ())


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("abc", 'expected an object or an array, got a string ("abc")'),
        (5, "expected an object or an array, got an integer (5)"),
        (True, "expected an object or an array, got a boolean (true)"),
        ({"tag": []}, 'object has no "tags" key (keys: "tag")'),
        ({"tags": [], "v": 2}, 'unexpected key beside "tags": "v"'),
        ({"tags": None}, "tags: must be an array of parent entries, got null"),
        ({"tags": {"a": 1}}, "tags: must be an array of parent entries, got an object with 1 key"),
        (
            {"tags": [[1, "a", 1, []], [2, "b", None]]},
            "tags[1]: parent entry must be [parent_id, name, display_order, children], "
            "got an array of 3 items",
        ),
        (
            {"tags": [[1.0, "a", 1, []]]},
            "tags[0][0]: parent id must be an integer, got a decimal number (1.0)",
        ),
        ({"tags": [[1, None, 1, []]]}, "tags[0][1]: parent name must be a string, got null"),
        (
            {"tags": [[1, "a", "1", []]]},
            'tags[0][2]: display order must be an integer or null, got a string ("1")',
        ),
        ({"tags": [[1, "a", 1, None]]}, "tags[0][3]: children must be an array, got null"),
        (
            {"tags": [[1, "a", 1, [[2, "x", 1], [3, "y", 1], "oops"]]]},
            "tags[0][3][2]: child entry must be [trait_id, value, display_order], "
            'got a string ("oops")',
        ),
        (
            {"tags": [[1, "a", 1, [[True, "x", 1]]]]},
            "tags[0][3][0][0]: trait id must be an integer, got a boolean (true)",
        ),
        (
            {"tags": [[1, "a", 1, [[2, 2140, 1]]]]},
            "tags[0][3][0][1]: value must be a string or null, got an integer (2140)",
        ),
        (
            {"tags": [[1, "a", 1, [[2, "x", 2.5]]]]},
            "tags[0][3][0][2]: display order must be an integer or null, got a decimal number (2.5)",
        ),
        (
            [[1, "a", 1, [[2, "x", 1, 9]]]],
            "[0][3][0]: child entry must be [trait_id, value, display_order], "
            "got an array of 4 items",
        ),
        ({"snapshot_at": "x"}, 'object with "snapshot_at" has no "tags" key'),
        (
            {"snapshot_at": "x", "tags": [[1, "a", 1, []]]},
            "tags[0]: legacy entry must be {trait_id, trait_name, parent_trait_id}, "
            "got an array of 4 items",
        ),
        (
            {"snapshot_at": "x", "tags": [{"trait_id": 1, "trait_name": "a"}]},
            'tags[0]: legacy entry has no "parent_trait_id"',
        ),
        (
            {
                "snapshot_at": "x",
                "tags": [{"trait_id": 1, "trait_name": "a", "parent_trait_id": None}],
            },
            "tags[0].parent_trait_id: parent trait id must be an integer, got null",
        ),
    ],
)
def test_invalid_values_say_what_and_where(value, error):
    assert decode(value) == Decoded(Shape.INVALID, error=error)
    assert decode(value).needs_repair


def test_error_previews_are_clipped():
    long_text = "x" * 10_000
    error = decode(long_text).error
    assert error == 'expected an object or an array, got a string ("' + "x" * 58 + "…)"
    huge = decode({"tags": [[1, "a", 1, [[2, 10**5000, 3]]]]}).error
    assert (
        huge
        == "tags[0][3][0][1]: value must be a string or null, got an integer (too long to show)"
    )
    keys = decode({f"key{i}": i for i in range(100)}).error
    assert keys == 'object has no "tags" key (keys: "key0", "key1", "key2", "key3", "key4")'


def test_non_json_python_values_do_not_crash():
    class Hostile(dict):
        def __contains__(self, key):
            raise RuntimeError("no")

    assert decode(Hostile(a=1)) == Decoded(Shape.INVALID, error="unreadable value: RuntimeError")
    assert decode((1, 2)) == Decoded(
        Shape.INVALID, error="expected an object or an array, got a Python tuple"
    )


def test_deeply_nested_values():
    deep: list = []
    for _ in range(10_000):
        deep = [deep]
    assert decode(deep) == Decoded(
        Shape.INVALID,
        error="[0]: parent entry must be [parent_id, name, display_order, children], "
        "got an array of 1 item",
    )
    assert decode({"tags": [[1, "a", 1, [[2, deep, 3]]]]}).error == (
        "tags[0][3][0][1]: value must be a string or null, got an array of 1 item"
    )
    deep_obj: dict = {}
    for _ in range(10_000):
        deep_obj = {"tags": deep_obj}
    assert (
        decode(deep_obj).error
        == "tags: must be an array of parent entries, got an object with 1 key"
    )


def test_ten_megabyte_values():
    parents = [
        [p, f"parent {p}", p, [[p * 100 + c, "v" * 20, c] for c in range(10)]]
        for p in range(25_000)
    ]
    value = {"tags": parents}
    assert len(json.dumps(value)) > 10_000_000
    decoded = decode(value)
    assert decoded.shape is Shape.ENVELOPE
    assert len(decoded.parents) == 25_000
    assert encode(decoded.parents) == value
    parents[-1][3][-1][2] = "9"
    assert decode(value).error == (
        'tags[24999][3][9][2]: display order must be an integer or null, got a string ("9")'
    )
    assert decode("z" * 10_000_000).shape is Shape.INVALID


def test_encode_gives_back_a_good_envelope_exactly():
    value = {"tags": EXAMPLE}
    again = encode(decode(value).parents)
    assert json.dumps(again) == json.dumps(value)
    assert to_nested(EXAMPLE_TREE) == EXAMPLE


# --- hypothesis -----------------------------------------------------------------------------

ints = st.integers(-(2**63), 2**63 - 1)
opt_ints = st.none() | ints
children = st.builds(ChildTag, ints, st.none() | st.text(max_size=8), opt_ints)
parents = st.builds(
    ParentTrait, ints, st.text(max_size=8), opt_ints, st.lists(children, max_size=4).map(tuple)
)
trees = st.lists(parents, max_size=5).map(tuple)
json_values = st.recursive(
    st.none() | st.booleans() | ints | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=40,
)


@given(trees)
def test_round_trip(tree):
    decoded = decode(encode(tree))
    assert decoded.parents == tree
    blank = any(c.is_blank for p in tree for c in p.children)
    assert decoded.shape is (Shape.NULL_VALUES if blank else Shape.ENVELOPE)
    assert decode(json.loads(json.dumps(encode(tree)))).parents == tree
    assert decode(to_nested(tree)) == Decoded(Shape.BARE_ARRAY, tree)


@given(trees.filter(lambda t: any(p.children for p in t)), st.data())
def test_a_bad_trait_id_is_pointed_at(tree, data):
    i = data.draw(st.sampled_from([i for i, p in enumerate(tree) if p.children]))
    j = data.draw(st.integers(0, len(tree[i].children) - 1))
    bad = data.draw(
        st.sampled_from([(1.0, "a decimal number (1.0)"), (False, "a boolean (false)")])
    )
    value = encode(tree)
    value["tags"][i][3][j][0] = bad[0]
    assert decode(value) == Decoded(
        Shape.INVALID, error=f"tags[{i}][3][{j}][0]: trait id must be an integer, got {bad[1]}"
    )


@settings(max_examples=300)
@given(json_values)
def test_decode_never_raises(value):
    decoded = decode(value)
    assert decoded.shape in SHAPES
    assert (decoded.error is not None) is (decoded.shape is Shape.INVALID)
    if decoded.error is not None:
        assert 0 < len(decoded.error) < 300
        assert decoded.parents == ()
    if value is None:
        assert decoded.shape is Shape.MISSING
    elif not isinstance(value, list | dict):
        assert decoded.shape is Shape.INVALID


# --- building snapshots -----------------------------------------------------------------------


def trait(trait_id, name, display_order, parent=None):
    return TraitInfo(trait_id, name, display_order, parent)


TRAITS = {
    t.trait_id: t
    for t in [
        trait(164, "Home Own/Rent", 1),
        trait(165, "Own", 1, 164),
        trait(166, "Rent", 2, 164),
        trait(4, "Home Zip Code", 1),
        trait(36566, "02140", 2140, 4),
        trait(36567, "02139", 2139, 4),
        trait(869, "Home Properties", 2),
        trait(894, "Multi-story", 1, 869),
        trait(878, "Central Heat/AC", 2, 869),
        trait(882, "Fireplace - Gas", 2, 869),
        trait(900, "Unordered", None),
        trait(901, "No order", None, 900),
        trait(902, "Five", 5, 900),
        trait(50, "Lonely", 1),
        trait(60, "Orphan", 1, 999),
    ]
}


def snapshot(group_ids, rows):
    tag_rows = [TagRow(tag_id, trait_id, value) for tag_id, trait_id, value in rows]
    return build_snapshot(tag_rows, band_metadata(group_ids, TRAITS), TRAITS)


def test_band_metadata_groups_by_parent_and_skips_orphans():
    assert band_metadata([166, 36566, 36567, 50, 60, 12345, 166], TRAITS) == {
        164: BandParent(164, "Home Own/Rent", 1, frozenset({166})),
        4: BandParent(4, "Home Zip Code", 1, frozenset({36566, 36567})),
    }


def test_two_groups_sharing_a_parent_merge_their_children():
    group_a, group_b = [165], [166]
    assert band_metadata(group_a + group_b, TRAITS) == {
        164: BandParent(164, "Home Own/Rent", 1, frozenset({165, 166}))
    }
    assert snapshot(group_a + group_b, [(1, 166, "Rent"), (2, 165, "Own")]) == {
        "tags": [[164, "Home Own/Rent", 1, [[165, "Own", 1], [166, "Rent", 2]]]]
    }


def test_the_domain_example_tags_with_ties_broken_by_id():
    groups = [165, 166, 36566, 36567, 894, 878, 882]
    rows = [(1, 882, "Fireplace - Gas"), (4, 36566, "02140"), (5, 878, "Central Heat/AC")]
    rows += [(2, 166, "Rent"), (3, 894, "Multi-story")]
    # 878 and 882 tie on display order 2: trait id decides, whatever the tag ids. Home Own/Rent
    # and Home Zip Code tie on 1: parent id decides, so 4 comes before 164 (DOMAIN.md's example
    # lists them the other way round).
    assert snapshot(groups, rows) == {"tags": [EXAMPLE[1], EXAMPLE[0], EXAMPLE[2]]}


def test_null_display_orders_sort_last():
    groups = [901, 902, 166]
    rows = [(1, 901, "n"), (2, 902, "f"), (3, 166, "Rent")]
    assert snapshot(groups, rows) == {
        "tags": [
            [164, "Home Own/Rent", 1, [[166, "Rent", 2]]],
            [900, "Unordered", None, [[902, "f", 5], [901, "n", None]]],
        ]
    }


def test_blank_values_are_kept_as_they_are():
    result = snapshot([36566, 36567], [(1, 36566, None), (2, 36567, "")])
    assert result == {"tags": [[4, "Home Zip Code", 1, [[36567, "", 2139], [36566, None, 2140]]]]}
    assert decode(result).shape is Shape.NULL_VALUES


def test_duplicate_tag_rows_give_one_child_each_in_tag_id_order():
    rows = [(9, 166, "second"), (3, 166, "first")]
    assert snapshot([166], rows) == {
        "tags": [[164, "Home Own/Rent", 1, [[166, "first", 2], [166, "second", 2]]]]
    }


def test_tags_outside_the_band_or_without_a_known_parent_are_dropped():
    rows = [(1, 165, "Own"), (2, 50, "x"), (3, 60, "y"), (4, 77777, "gone"), (5, 894, "M")]
    assert snapshot([166, 50, 60, 894], rows) == {
        "tags": [[869, "Home Properties", 2, [[894, "M", 1]]]]
    }


@pytest.mark.parametrize(
    ("groups", "rows"),
    [([166], []), ([], [(1, 166, "Rent")]), ([166], [(1, 165, "Own"), (2, 50, "x")])],
)
def test_nothing_kept_is_an_empty_list_never_none(groups, rows):
    result = snapshot(groups, rows)
    assert result == {"tags": []}
    assert decode(result) == Decoded(Shape.ENVELOPE, ())


# --- JSON null, tie order, and when blank values are broken ----------------------------------


def test_json_null_is_invalid_when_told_apart_from_sql_null():
    assert decode(None).shape is Shape.MISSING
    decoded = decode(None, sql_null=False)
    assert decoded.shape is Shape.INVALID and "JSON null" in decoded.error
    assert decoded.needs_repair and is_broken(decoded, [])


def tree(value) -> tuple[ParentTrait, ...]:
    return decode({"tags": value}).parents


def test_the_domain_example_in_the_application_order_is_the_same_snapshot():
    ours = tree([EXAMPLE[1], EXAMPLE[0], EXAMPLE[2]])  # what qsnap writes: ties by id
    assert same_up_to_ties(tree(EXAMPLE), ours)
    assert canonical(tree(EXAMPLE)) == canonical(ours)


@pytest.mark.parametrize(
    "other",
    [
        # entries of different display orders swapped
        [EXAMPLE[0], EXAMPLE[2], EXAMPLE[1]],
        [EXAMPLE[0], EXAMPLE[1], [869, "Home Properties", 2, EXAMPLE[2][3][::-1]]],
        # a value, a name, a display order changed; an entry dropped
        with_zip_value("02141"),
        [[164, "Home Own", 1, EXAMPLE[0][3]], EXAMPLE[1], EXAMPLE[2]],
        [[164, "Home Own/Rent", 3, EXAMPLE[0][3]], EXAMPLE[1], EXAMPLE[2]],
        EXAMPLE[:2],
    ],
)
def test_any_other_difference_is_still_one(other):
    assert not same_up_to_ties(tree(EXAMPLE), tree(other))


def test_tied_children_swap_within_their_stretch_only():
    kids = [[894, "Multi-story", 1], [882, "Fireplace - Gas", 2], [878, "Central Heat/AC", 2]]
    assert same_up_to_ties(tree(EXAMPLE), tree([*EXAMPLE[:2], [869, "Home Properties", 2, kids]]))
    # two stretches of the same display order apart are not one stretch
    split = [[1, "a", 1], [2, "b", 2], [3, "c", 1]]
    assert not same_up_to_ties(
        tree([[9, "p", 1, split]]), tree([[9, "p", 1, [split[2], split[1], split[0]]]])
    )


def test_duplicate_tags_compare_by_value_within_a_tie():
    a = tree([[164, "Home Own/Rent", 1, [[166, "first", 2], [166, "second", 2]]]])
    b = tree([[164, "Home Own/Rent", 1, [[166, "second", 2], [166, "first", 2]]]])
    assert same_up_to_ties(a, b)


BLANK_ZIP = {"tags": [[4, "Home Zip Code", 1, [[36566, None, 2140]]]]}


@pytest.mark.parametrize(
    ("tags", "broken"),
    [
        ([TagRow(1, 36566, "02140")], True),  # the tag has a value now
        ([TagRow(1, 36566, None)], False),  # really NULL: correct
        ([TagRow(1, 36566, "")], False),  # really empty: correct
        ([TagRow(1, 36566, "02140"), TagRow(2, 36566, None)], False),  # one of two is blank
        ([], False),  # no tag any more: stale, not broken
        ([TagRow(1, 36567, "02139")], False),  # a value on another trait only
    ],
)
def test_blank_values_are_broken_only_while_the_tag_has_a_value(tags, broken):
    decoded = decode(BLANK_ZIP)
    assert decoded.shape is Shape.NULL_VALUES
    assert blank_entries_wrong(decoded.parents, tags) is broken
    assert is_broken(decoded, tags) is broken


def test_every_other_shape_is_broken_or_not_whatever_the_tags():
    assert not is_broken(decode(None), [])
    assert not is_broken(decode({"tags": EXAMPLE}), [])
    for value in (EXAMPLE, {}, {"snapshot_at": "x", "tags": []}, "text"):
        assert is_broken(decode(value), [])
