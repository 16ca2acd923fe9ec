"""The snapshot format of DOMAIN.md: read every shape found in the wild, write the envelope.

Pure Python: ``decode`` is the reference that ``shape_sql`` (the same classification, run inside
PostgreSQL) is tested against, and ``build_snapshot`` is the reference the SQL snapshot engine is
tested against.

An "integer" is what psycopg hands over for a jsonb number written without a fraction: a Python
``int`` (never a ``bool``). jsonb keeps ``3.0`` as written and psycopg reads it back as a float, so
an integral float is invalid here and in ``shape_sql`` alike: a writer that produces it is wrong,
and repair rewrites the row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from itertools import islice


class Shape(StrEnum):
    MISSING = "missing"
    ENVELOPE = "envelope"
    BARE_ARRAY = "bare_array"
    LEGACY_FLAT = "legacy_flat"
    EMPTY_OBJECT = "empty_object"
    NULL_VALUES = "null_values"
    INVALID = "invalid"


SHAPES: tuple[Shape, ...] = tuple(Shape)
BROKEN_SHAPES: tuple[Shape, ...] = (
    Shape.BARE_ARRAY,
    Shape.LEGACY_FLAT,
    Shape.EMPTY_OBJECT,
    Shape.NULL_VALUES,
    Shape.INVALID,
)


@dataclass(frozen=True)
class ChildTag:
    trait_id: int
    value: str | None
    display_order: int | None

    @property
    def is_blank(self) -> bool:
        """A tag that explains nothing (seen on zip codes): repair rebuilds it."""
        return self.value is None or self.value == ""


@dataclass(frozen=True)
class ParentTrait:
    trait_id: int
    name: str | None
    display_order: int | None
    children: tuple[ChildTag, ...]


@dataclass(frozen=True)
class Decoded:
    shape: Shape
    parents: tuple[ParentTrait, ...] = ()
    error: str | None = None

    @property
    def needs_repair(self) -> bool:
        return self.shape is Shape.MISSING or self.shape in BROKEN_SHAPES


class _Invalid(Exception):
    """Stops decoding at the first problem; its text is the operator's error line."""


_PREVIEW = 60
_PARENT_FORM = "[parent_id, name, display_order, children]"
_CHILD_FORM = "[trait_id, value, display_order]"
_LEGACY_FORM = "{trait_id, trait_name, parent_trait_id}"
_LEGACY_KEYS = ("trait_id", "trait_name", "parent_trait_id")


def _clip(text: str) -> str:
    return text if len(text) <= _PREVIEW else text[: _PREVIEW - 1] + "…"


def _items(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _describe(x: object) -> str:
    """Name a value's JSON kind with a short preview; containers are never serialised."""
    if x is None:
        return "null"
    if isinstance(x, bool):
        return f"a boolean ({'true' if x else 'false'})"
    if isinstance(x, int):
        # str() of a huge int is slow and refused past 4300 digits.
        return f"an integer ({_clip(str(x)) if x.bit_length() <= 256 else 'too long to show'})"
    if isinstance(x, float):
        return f"a decimal number ({_clip(repr(x))})"
    if isinstance(x, str):
        return f"a string ({_clip(json.dumps(x[:_PREVIEW], ensure_ascii=False))})"
    if isinstance(x, list):
        return f"an array of {_items(len(x), 'item')}"
    if isinstance(x, dict):
        return f"an object with {_items(len(x), 'key')}"
    return f"a Python {type(x).__name__}"


def _key_list(keys: Iterable[object]) -> str:
    shown = [json.dumps(str(k)[:20], ensure_ascii=False) for k in islice(keys, 5)]
    return ", ".join(shown)


def _int(x: object, where: str, what: str) -> int:
    if isinstance(x, int) and not isinstance(x, bool):
        return x
    raise _Invalid(f"{where}: {what} must be an integer, got {_describe(x)}")


def _opt_int(x: object, where: str, what: str) -> int | None:
    if x is None or (isinstance(x, int) and not isinstance(x, bool)):
        return x
    raise _Invalid(f"{where}: {what} must be an integer or null, got {_describe(x)}")


def _str(x: object, where: str, what: str) -> str:
    if isinstance(x, str):
        return x
    raise _Invalid(f"{where}: {what} must be a string, got {_describe(x)}")


def _opt_str(x: object, where: str, what: str) -> str | None:
    if x is None or isinstance(x, str):
        return x
    raise _Invalid(f"{where}: {what} must be a string or null, got {_describe(x)}")


def _entry(x: object, size: int, where: str, what: str) -> list:
    if isinstance(x, list) and len(x) == size:
        return x
    raise _Invalid(f"{where}: {what}, got {_describe(x)}")


def _child(x: object, where: str) -> ChildTag:
    entry = _entry(x, 3, where, f"child entry must be {_CHILD_FORM}")
    return ChildTag(
        _int(entry[0], f"{where}[0]", "trait id"),
        _opt_str(entry[1], f"{where}[1]", "value"),
        _opt_int(entry[2], f"{where}[2]", "display order"),
    )


def _tree(tags: object, root: str) -> tuple[ParentTrait, ...]:
    if not isinstance(tags, list):
        raise _Invalid(f"{root}: must be an array of parent entries, got {_describe(tags)}")
    parents = []
    for i, x in enumerate(tags):
        where = f"{root}[{i}]"
        entry = _entry(x, 4, where, f"parent entry must be {_PARENT_FORM}")
        children = entry[3]
        if not isinstance(children, list):
            raise _Invalid(f"{where}[3]: children must be an array, got {_describe(children)}")
        parents.append(
            ParentTrait(
                _int(entry[0], f"{where}[0]", "parent id"),
                _str(entry[1], f"{where}[1]", "parent name"),
                _opt_int(entry[2], f"{where}[2]", "display order"),
                tuple(_child(c, f"{where}[3][{j}]") for j, c in enumerate(children)),
            )
        )
    return tuple(parents)


def _legacy(value: dict) -> tuple[ParentTrait, ...]:
    """The old flat list, regrouped by parent_trait_id in first-seen order, names as values."""
    if "tags" not in value:
        raise _Invalid('object with "snapshot_at" has no "tags" key')
    tags = value["tags"]
    if not isinstance(tags, list):
        raise _Invalid(f"tags: must be an array of {_LEGACY_FORM}, got {_describe(tags)}")
    groups: dict[int, list[ChildTag]] = {}
    for i, x in enumerate(tags):
        where = f"tags[{i}]"
        if not isinstance(x, dict):
            raise _Invalid(f"{where}: legacy entry must be {_LEGACY_FORM}, got {_describe(x)}")
        for key in _LEGACY_KEYS:
            if key not in x:
                raise _Invalid(f'{where}: legacy entry has no "{key}"')
        trait_id = _int(x["trait_id"], f"{where}.trait_id", "trait id")
        name = _str(x["trait_name"], f"{where}.trait_name", "trait name")
        parent_id = _int(x["parent_trait_id"], f"{where}.parent_trait_id", "parent trait id")
        groups.setdefault(parent_id, []).append(ChildTag(trait_id, name, None))
    return tuple(ParentTrait(pid, None, None, tuple(kids)) for pid, kids in groups.items())


def _decode(value: object) -> Decoded:
    if value is None:
        return Decoded(Shape.MISSING)
    if isinstance(value, list):
        return Decoded(Shape.BARE_ARRAY, _tree(value, ""))
    if not isinstance(value, dict):
        raise _Invalid(f"expected an object or an array, got {_describe(value)}")
    if not value:
        return Decoded(Shape.EMPTY_OBJECT)
    if "snapshot_at" in value:
        return Decoded(Shape.LEGACY_FLAT, _legacy(value))
    if "tags" not in value:
        raise _Invalid(f'object has no "tags" key (keys: {_key_list(value)})')
    if len(value) > 1:
        others = _key_list(k for k in value if k != "tags")
        raise _Invalid(f'unexpected key beside "tags": {others}')
    parents = _tree(value["tags"], "tags")
    blank = any(c.is_blank for p in parents for c in p.children)
    return Decoded(Shape.NULL_VALUES if blank else Shape.ENVELOPE, parents)


JSON_NULL_ERROR = "a JSON null (not SQL NULL): looks filled but says nothing"


def decode(value: object, *, sql_null: bool = True) -> Decoded:
    """Classify a snapshot as psycopg returns the jsonb (None for SQL NULL); never raises.

    psycopg reads a jsonb ``null`` as None too: a caller that can tell it from SQL NULL says
    so with ``sql_null=False``, and the value is then invalid (DOMAIN.md "JSON null").
    Only the fixed depth of the format is walked, so a deeply nested or huge value costs at
    most one pass. An object holding "snapshot_at" is judged as the legacy flat form only; an
    envelope has no key beside "tags" (so that re-encoding it gives back the same value).
    """
    if value is None and not sql_null:
        return Decoded(Shape.INVALID, error=JSON_NULL_ERROR)
    try:
        return _decode(value)
    except _Invalid as exc:
        return Decoded(Shape.INVALID, error=str(exc))
    except Exception as exc:  # a non-JSON object misbehaving: still a row to show, not a crash
        return Decoded(Shape.INVALID, error=f"unreadable value: {type(exc).__name__}")


def to_nested(parents: Iterable[ParentTrait]) -> list:
    return [
        [
            p.trait_id,
            p.name,
            p.display_order,
            [[c.trait_id, c.value, c.display_order] for c in p.children],
        ]
        for p in parents
    ]


def encode(parents: Iterable[ParentTrait]) -> dict:
    return {"tags": to_nested(parents)}


# --- the same classification in SQL ---------------------------------------------------------
# Structure is checked with strict jsonpath filters on jsonpath types. jsonpath compares numbers
# by value (3.0 == 3), so "integer" is checked on the text of the collected numbers instead:
# jsonb prints numbers without exponent, so a "." there means a fraction, as Python sees it.
# A check that raises on some values (strict paths, number collection) gets its own CASE arm
# after the checks that rule those values out: AND/OR may run in any order (and constant folding
# runs them all), only CASE fixes the order.

_PARENT_OK = (
    '@.type() == "array" && @.size() == 4 && @[0].type() == "number"'
    ' && @[1].type() == "string" && (@[2].type() == "number" || @[2].type() == "null")'
    ' && @[3].type() == "array"'
)


def _child_ok(blank_is_bad: bool) -> str:
    """A child [trait_id, value, display_order]; with ``blank_is_bad`` its value is a
    non-empty string, else a string or null."""
    value = (
        '@[1].type() == "string" && @[1] != ""'
        if blank_is_bad
        else '(@[1].type() == "string" || @[1].type() == "null")'
    )
    return (
        f'@.type() == "array" && @.size() == 3 && @[0].type() == "number" && {value}'
        ' && (@[2].type() == "number" || @[2].type() == "null")'
    )


# A legacy entry may lack a key, which strict mode reports as "unknown" rather than false.
_LEGACY_OK = (
    '@.type() == "object" && @.trait_id.type() == "number"'
    ' && @.trait_name.type() == "string" && @.parent_trait_id.type() == "number"'
)
_LEGACY_BAD = f"strict $.tags[*] ? (!({_LEGACY_OK}) || ({_LEGACY_OK}) is unknown)"


def _bad_entry(col: str, root: str, *, blank_is_bad: bool) -> str:
    """Some entry under ``root`` is not a parent, or some child not a child: the parents in
    one pass, then (once all are well formed, so that the flat path cannot raise) the
    children in another. A children's filter nested in the parents' cost twice as much."""
    parents = f"jsonb_path_exists({col}, 'strict {root}[*] ? (!({_PARENT_OK}))')"
    children = (
        f"jsonb_path_exists({col}, 'strict {root}[*][3][*] ? (!({_child_ok(blank_is_bad)}))')"
    )
    return f"(case when {parents} then true else {children} end)"


def _fraction(col: str, *paths: str) -> str:
    """Some number at these paths has a fraction; the paths must reach only numbers and nulls.

    A value whose text has no "." anywhere has none: that check, first, costs a quarter of
    collecting the numbers, which is left to values that have one.
    """
    arrays = " || ".join(f"jsonb_path_query_array({col}, 'strict {p}')" for p in paths)
    return (
        f"(case when strpos(({col})::text, '.') = 0 then false"
        f" else strpos(({arrays})::text, '.') > 0 end)"
    )


def _tree_fraction(col: str, root: str) -> str:
    return _fraction(col, f"{root}[*][0,2]", f"{root}[*][3][*][0,2]")


def _not_envelope_form(col: str) -> str:
    """An object that is not {"tags": array}; col must be known to be an object."""
    return (
        f"jsonb_typeof({col} -> 'tags') is distinct from 'array' or {col} - 'tags' <> '{{}}'::jsonb"
    )


def shape_sql(column: str) -> str:
    """A text expression giving ``decode(column).shape`` for each row, inside PostgreSQL.

    ``column`` is a trusted identifier. A jsonb ``null`` is 'invalid' (it is not SQL NULL:
    missing mode does not see it, repair rebuilds it). A good envelope costs one jsonpath pass
    and the number check.
    """
    c = f"({column})"
    return (
        f"case when {c} is null then 'missing'"
        f" when jsonb_typeof({c}) = 'array' then"
        f" case when {_bad_entry(c, '$', blank_is_bad=False)} then 'invalid'"
        f" when {_tree_fraction(c, '$')} then 'invalid' else 'bare_array' end"
        f" when jsonb_typeof({c}) <> 'object' then 'invalid'"
        f" when {c} = '{{}}'::jsonb then 'empty_object'"
        f" when {c} ? 'snapshot_at' then"
        f" case when jsonb_typeof({c} -> 'tags') is distinct from 'array' then 'invalid'"
        f" when jsonb_path_exists({c}, '{_LEGACY_BAD}') then 'invalid'"
        f" when {_fraction(c, '$.tags[*].trait_id', '$.tags[*].parent_trait_id')} then 'invalid'"
        f" else 'legacy_flat' end"
        f" when {_not_envelope_form(c)} then 'invalid'"
        f" when not {_bad_entry(c, '$.tags', blank_is_bad=True)} then"
        f" case when {_tree_fraction(c, '$.tags')} then 'invalid' else 'envelope' end"
        f" when {_bad_entry(c, '$.tags', blank_is_bad=False)} then 'invalid'"
        f" when {_tree_fraction(c, '$.tags')} then 'invalid'"
        f" else 'null_values' end"
    )


def needs_repair_sql(column: str) -> str:
    """A boolean expression: true unless a well-formed envelope without blank values.

    Only an object shaped {"tags": array} reaches the jsonpath pass and the number check.
    """
    c = f"({column})"
    return (
        f"case when {c} is null or jsonb_typeof({c}) <> 'object' then true"
        f" when {_not_envelope_form(c)} then true"
        f" when {_bad_entry(c, '$.tags', blank_is_bad=True)} then true"
        f" else {_tree_fraction(c, '$.tags')} end"
    )


def _int_or_null(json_number: str) -> str:
    """A jsonb integer as an integer, NULL when out of range (it then equals no id): a plain
    expression, so that a comparison with an integer column can be an index condition."""
    n = f"cast({json_number} as numeric)"
    return f"(case when {n} between -2147483648 and 2147483647 then cast({n} as integer) end)"


def blank_entries_wrong_sql(column: str, me_file_column: str) -> str:
    """True when a blank child entry stands for a tag that has a value now (DOMAIN.md "null
    values"): the me_file has a tag on that trait with a value and none without one.

    ``column`` must be known to hold a structurally good envelope. Each blank entry probes
    the (me_file_id, trait_id) index once: ``bool_and`` is NULL without a tag, false with a
    blank one.
    """
    c = f"({column})"
    blank = 'strict $.tags[*][3][*] ? (@[1] == null || @[1] == "")'
    return (
        f"exists (select 1 from jsonb_path_query({c}, '{blank}') as b(e)"
        f" where (select bool_and(coalesce(mt.tag_value, '') <> '') from me_file_tags mt"
        f" where mt.me_file_id = {me_file_column} and mt.trait_id = {_int_or_null('b.e -> 0')}))"
    )


def broken_sql(column: str, me_file_column: str) -> str:
    """A boolean: the stored snapshot is broken (repair rebuilds it); false for SQL NULL.

    Every shape but a good envelope is broken, except that blank values are broken only where
    ``blank_entries_wrong_sql`` says so. The me_file's tags are read for such rows only.
    """
    c = f"({column})"
    return (
        f"case when {c} is null then false"
        f" when jsonb_typeof({c}) <> 'object' then true"
        f" when {_not_envelope_form(c)} then true"
        f" when not {_bad_entry(c, '$.tags', blank_is_bad=True)} then {_tree_fraction(c, '$.tags')}"
        f" when {_bad_entry(c, '$.tags', blank_is_bad=False)} then true"
        f" when {_tree_fraction(c, '$.tags')} then true"
        f" else {blank_entries_wrong_sql(c, me_file_column)} end"
    )


def good_sql(column: str, me_file_column: str) -> str:
    """A boolean: filled and not broken (what offers and ad events may copy)."""
    return f"({column} is not null and not ({broken_sql(column, me_file_column)}))"


def _runs(elements: str) -> str:
    """Rows (v, run) of a jsonb array of entries: ``run`` numbers the stretches of entries
    with equal display order (element 2), in array order."""
    return (
        "select r.v, sum(r.step) over (order by r.o) as run from ("
        "select x.v, x.o, case when x.v -> 2 is not distinct from "
        "lag(x.v -> 2) over (order by x.o) then 0 else 1 end as step "
        f"from jsonb_array_elements({elements}) with ordinality as x(v, o)) r"
    )


def canonical_sql(column: str) -> str:
    """The text of a structurally good envelope's tree with ties put in one order.

    Entries keep their places except inside a stretch of equal display_order, where they are
    sorted by id (then value): two snapshots that differ only in the order of tied entries
    get the same text, and any other difference survives.
    """
    tags = f"({column}) -> 'tags'"
    kids = (
        "(select coalesce(jsonb_agg(k.v order by k.run, k.v -> 0, k.v -> 1), '[]'::jsonb)"
        f" from ({_runs('p.v -> 3')}) k)"
    )
    return (
        "(select coalesce(string_agg(q.entry, ',' order by q.run, q.id, q.entry), '')"
        " from (select p.run, p.v -> 0 as id,"
        f" cast(jsonb_build_array(p.v -> 0, p.v -> 1, p.v -> 2, {kids}) as text) as entry"
        f" from ({_runs(tags)}) p) q)"
    )


def same_sql(stored: str, rebuilt: str) -> str:
    """A boolean: the stored snapshot equals the rebuilt envelope up to ties (DOMAIN.md rule 5).

    Equal texts are the common case and cost no tree walk; numbers are compared as written,
    so a stored 3.0 never passes for the 3 a rebuild writes.
    """
    s = f"({stored})"
    return (
        f"case when {s} is null then false"
        f" when cast({s} as text) = cast({rebuilt} as text) then true"
        f" when jsonb_typeof({s}) <> 'object' then false"
        f" when {_not_envelope_form(s)} then false"
        f" when {_bad_entry(s, '$.tags', blank_is_bad=False)} then false"
        f" when {_tree_fraction(s, '$.tags')} then false"
        f" else {canonical_sql(s)} = {canonical_sql(rebuilt)} end"
    )


# --- building a snapshot (DOMAIN.md "The snapshot of population (M, B)") ---------------------


@dataclass(frozen=True)
class TraitInfo:
    trait_id: int
    name: str
    display_order: int | None
    parent_trait_id: int | None


@dataclass(frozen=True)
class TagRow:
    tag_id: int
    trait_id: int
    tag_value: str | None


@dataclass(frozen=True)
class BandParent:
    parent_id: int
    name: str
    display_order: int | None
    child_ids: frozenset[int]


def band_metadata(
    group_trait_ids: Iterable[int], traits: Mapping[int, TraitInfo]
) -> dict[int, BandParent]:
    """Step 1: the band's traits grouped by parent; orphans and parentless traits are skipped."""
    children: dict[int, set[int]] = {}
    for trait_id in group_trait_ids:
        trait = traits.get(trait_id)
        if trait is None or trait.parent_trait_id is None or trait.parent_trait_id not in traits:
            continue
        children.setdefault(trait.parent_trait_id, set()).add(trait_id)
    return {
        pid: BandParent(pid, traits[pid].name, traits[pid].display_order, frozenset(ids))
        for pid, ids in children.items()
    }


def _nulls_last(display_order: int | None) -> tuple[bool, int]:
    return (display_order is None, display_order or 0)


def build_snapshot(
    tags: Iterable[TagRow], metadata: Mapping[int, BandParent], traits: Mapping[int, TraitInfo]
) -> dict:
    """Steps 2-4: the envelope of a me_file's kept tags; ``{"tags": []}`` when none is kept.

    Ties are broken by trait id, then tag id, so the result does not depend on row order.
    """
    kept: dict[int, list[tuple[TagRow, TraitInfo]]] = {}
    for row in tags:
        trait = traits.get(row.trait_id)
        if trait is None or trait.parent_trait_id is None:
            continue
        band_parent = metadata.get(trait.parent_trait_id)
        if band_parent is not None and row.trait_id in band_parent.child_ids:
            kept.setdefault(trait.parent_trait_id, []).append((row, trait))
    parents = []
    for pid in sorted(kept, key=lambda p: (*_nulls_last(metadata[p].display_order), p)):
        rows = sorted(
            kept[pid],
            key=lambda rt: (*_nulls_last(rt[1].display_order), rt[0].trait_id, rt[0].tag_id),
        )
        children = tuple(ChildTag(r.trait_id, r.tag_value, t.display_order) for r, t in rows)
        band_parent = metadata[pid]
        parents.append(ParentTrait(pid, band_parent.name, band_parent.display_order, children))
    return encode(parents)


# --- comparing and judging (DOMAIN.md rule 5 and the "null values" shape) --------------------


def _entry_key(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _canonical_runs(items: list, order_of, key_of) -> list:
    """Items kept in place except inside stretches of equal display order, sorted there."""
    out: list = []
    run: list = []
    for item in items:
        if run and order_of(item) != order_of(run[-1]):
            out.extend(sorted(run, key=key_of))
            run = []
        run.append(item)
    out.extend(sorted(run, key=key_of))
    return out


def canonical(parents: Iterable[ParentTrait]) -> list:
    """The nested tree with tied entries in one order (by id, then value)."""
    tree = []
    for p in parents:
        kids = _canonical_runs(
            [[c.trait_id, c.value, c.display_order] for c in p.children],
            lambda c: c[2],
            lambda c: (c[0], c[1] is not None, c[1] or ""),
        )
        tree.append([p.trait_id, p.name, p.display_order, kids])
    return _canonical_runs(tree, lambda p: p[2], lambda p: (p[0], _entry_key(p)))


def same_up_to_ties(a: Iterable[ParentTrait], b: Iterable[ParentTrait]) -> bool:
    """Two trees that differ at most in the order of entries with equal display_order."""
    a, b = tuple(a), tuple(b)
    return a == b or canonical(a) == canonical(b)


def blank_entries_wrong(parents: Iterable[ParentTrait], tags: Iterable[TagRow]) -> bool:
    """A blank child entry whose trait has a tag with a value now, and none without one."""
    valued: set[int] = set()
    blank: set[int] = set()
    for t in tags:
        (blank if t.tag_value is None or t.tag_value == "" else valued).add(t.trait_id)
    return any(
        c.is_blank and c.trait_id in valued and c.trait_id not in blank
        for p in parents
        for c in p.children
    )


def is_broken(decoded: Decoded, tags: Iterable[TagRow]) -> bool:
    """Repair rebuilds it: a broken shape, or blank values that the tags now contradict."""
    if decoded.shape is Shape.NULL_VALUES:
        return blank_entries_wrong(decoded.parents, tags)
    return decoded.shape in BROKEN_SHAPES
