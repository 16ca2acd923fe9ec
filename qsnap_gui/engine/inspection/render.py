"""The report in words (the command line's text, the window's why/next band/stale lines)
and as pretty JSON."""

from __future__ import annotations

import json
from typing import Any

from qsnap_gui.domain.codec import Decoded, Shape
from qsnap_gui.engine.inspection.report import (
    InspectReport,
    Membership,
    StaleCheck,
    TagRef,
    TraitRef,
)


def pretty_json(value: Any, fallback: str | None = None) -> str:
    """Indented JSON where arrays of scalars (child entries) stay on one line.

    A value too deep to walk gives ``fallback`` (the stored text) instead.
    """
    try:
        return _pretty(value, "")
    except RecursionError:
        return fallback if fallback is not None else "(too deeply nested to show)"


def _pretty(value: Any, indent: str) -> str:
    if isinstance(value, list):
        if not value:
            return "[]"
        if all(not isinstance(v, (list, dict)) for v in value):
            return json.dumps(value, ensure_ascii=False)
        head, last = value[:-1], value[-1]
        if head and isinstance(last, list) and all(not isinstance(v, (list, dict)) for v in head):
            # a parent entry: [id, name, order, [children…]] opens on one line
            scalars = ", ".join(json.dumps(v, ensure_ascii=False) for v in head)
            return f"[{scalars}, {_pretty(last, indent)}]"
        inner = indent + "  "
        items = ",\n".join(inner + _pretty(v, inner) for v in value)
        return f"[\n{items}\n{indent}]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        inner = indent + "  "
        items = ",\n".join(
            f"{inner}{json.dumps(k, ensure_ascii=False)}: {_pretty(v, inner)}"
            for k, v in value.items()
        )
        return f"{{\n{items}\n{indent}}}"
    return json.dumps(value, ensure_ascii=False)


def membership_json_text(m: Membership) -> str:
    """The stored value as pretty JSON for copying or the Raw JSON tab ("null" when NULL)."""
    if not m.readable:
        return m.raw_text or ""
    return pretty_json(m.raw, m.raw_text)


SHAPE_NOTES = {
    Shape.MISSING: "never snapshotted (NULL)",
    Shape.ENVELOPE: "envelope",
    Shape.BARE_ARRAY: "bare array (old form; repair rewrites it as an envelope)",
    Shape.LEGACY_FLAT: "legacy flat (no values, no nesting; repair rebuilds it)",
    Shape.EMPTY_OBJECT: "empty object (says nothing; repair rebuilds it)",
    Shape.NULL_VALUES: "null values (some tags have no value; repair rebuilds it)",
    Shape.INVALID: "invalid",
}

NO_VALUE = "(no value)"
_LIST_LIMIT = 12


def value_text(value: str | None) -> str:
    return NO_VALUE if value is None or value == "" else value


def _clip(s: str, n: int = 200) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def _trait_list(traits: tuple[TraitRef, ...]) -> str:
    if not traits:
        return "no traits at all: no me_file can satisfy it"
    shown = [f"{t.trait_name or '(deleted trait)'} ({t.trait_id})" for t in traits[:_LIST_LIMIT]]
    more = len(traits) - len(shown)
    return "any of " + ", ".join(shown) + (f" and {more:,} more" if more > 0 else "")


def _tag_list(tags: tuple[TagRef, ...]) -> str:
    shown = [
        f"{t.trait_name or '(deleted trait)'} ({t.trait_id}) = {_clip(value_text(t.tag_value), 60)}"
        for t in tags[:_LIST_LIMIT]
    ]
    more = len(tags) - len(shown)
    return ", ".join(shown) + (f" and {more:,} more" if more > 0 else "")


def tree_lines(decoded: Decoded, limit: int = 500) -> list[str]:
    """The decoded tree as indented lines (at most ``limit`` child lines)."""
    lines: list[str] = []
    shown = 0
    total = sum(len(p.children) for p in decoded.parents)
    for p in decoded.parents:
        name = p.name if p.name is not None else f"(parent {p.trait_id})"
        lines.append(f"{_clip(name)}  [trait {p.trait_id}, order {_order(p.display_order)}]")
        for c in p.children:
            if shown >= limit:
                lines.append(f"  … {total - shown:,} more tags not shown")
                return lines
            mark = "  ! " if c.is_blank else "    "
            lines.append(
                f"{mark}{_clip(value_text(c.value))}  "
                f"[trait {c.trait_id}, order {_order(c.display_order)}]"
            )
            shown += 1
    return lines


def _order(value: int | None) -> str:
    return "-" if value is None else str(value)


def _describe_shape(m: Membership) -> str:
    shape = Shape(m.shape)
    if shape is Shape.INVALID:
        return f"invalid: {m.decoded.error}"
    if shape is Shape.ENVELOPE and not m.decoded.parents:
        return "envelope (checked: no matching tags)"
    if shape is Shape.NULL_VALUES and not m.broken:
        return "null values, as the tags have them (NULL or empty): correct"
    return SHAPE_NOTES[shape]


def why_lines(m: Membership) -> list[str]:
    lines = []
    if m.band_id is None:
        lines.append("the population row names no band (orphan population row, never written)")
        return lines
    if not m.band_exists:
        lines.append(f"band {m.band_id} no longer exists (orphan population row)")
        return lines
    if not m.groups:
        have = "has" if m.has_tags else "has NO"
        lines.append(
            "this band has no trait groups: every me_file with at least one tag matches "
            f"(this one {have} tags)"
        )
    for g in m.groups:
        if g.satisfied:
            lines.append(f"✓ group {g.group_id} {g.title!r}: {_tag_list(g.tags)}")
        else:
            lines.append(
                f"✗ group {g.group_id} {g.title!r}: no longer satisfied "
                f"(needs {_trait_list(g.traits)})"
            )
    return lines


def next_band_lines(m: Membership) -> list[str]:
    if not m.band_exists:
        return []
    missing = m.next_band_missing_groups
    if missing is None:
        if m.is_innermost:
            return [f"this is the {m.band_label} (the innermost band): there is no band inside it"]
        return ["no band inward"]
    head = f"not in {m.next_band_label} (band {m.next_band_id})"
    if not missing:
        if m.next_band_groups:
            return [f"{head}: yet it satisfies all its groups now (population is out of date)"]
        return [f"{head}: it has no trait groups (population is out of date)"]
    lines = [f"{head}: it fails {len(missing)} of {len(m.next_band_groups or ())} groups"]
    lines.extend(f"✗ group {g.group_id} {g.title!r}: {_trait_list(g.traits)}" for g in missing)
    return lines


def stale_lines(s: StaleCheck, limit: int = 50) -> list[str]:
    """The stale check in words; each of added/removed/changed clipped to ``limit`` lines."""
    if not s.comparable:
        return [s.note or "not comparable"]
    if s.up_to_date:
        return ["up to date"]
    lines = ["stale: the stored snapshot differs from the tags now"]

    def clipped(items: tuple, fmt) -> None:
        lines.extend(fmt(d) for d in items[:limit])
        if len(items) > limit:
            lines.append(f"  … and {len(items) - limit:,} more")

    clipped(
        s.added,
        lambda d: (
            f"+ added   parent {d.parent_id}, trait {d.trait_id}: {_clip(value_text(d.value))}"
        ),
    )
    clipped(
        s.removed,
        lambda d: (
            f"- removed parent {d.parent_id}, trait {d.trait_id}: {_clip(value_text(d.value))}"
        ),
    )
    clipped(
        s.changed,
        lambda d: (
            f"~ changed parent {d.parent_id}, trait {d.trait_id}: "
            f"{_clip(value_text(d.stored_value))} -> {_clip(value_text(d.current_value))}"
        ),
    )
    if s.note:
        lines.append(s.note)
    return lines


def render_text(report: InspectReport) -> str:
    name = report.display_name if report.display_name is not None else "(no name)"
    if not report.me_file_exists:
        name = "(no me_files row: a deleted me_file's tags and populations)"
    n = len(report.memberships)
    out = [
        f"me_file {report.me_file_id} {name!r}: {report.tag_count} tags, "
        f"{n} membership{'s' if n != 1 else ''}"
    ]
    if not n:
        out.append("  in no band of any target")
    for m in report.memberships:
        target = (
            f"target {m.target_id} {m.target_title!r}"
            if m.target_title is not None
            else f"target {m.target_id} (deleted)"
            if m.target_id is not None
            else "no target"
        )
        updated = m.updated_at.strftime("%Y-%m-%d %H:%M:%S") if m.updated_at else "-"
        out.append("")
        out.append(
            f"{target} · {m.band_label} (band {m.band_id}) · population row {m.population_id}"
        )
        out.append(f"  snapshot: {_describe_shape(m)} · updated {updated}")
        if Shape(m.shape) is Shape.INVALID and m.raw_text is not None:
            out.append(f"  raw: {_clip(m.raw_text, 300)}")
        out.extend("    " + line for line in tree_lines(m.decoded))
        out.append("  why it matched:")
        out.extend("    " + line for line in why_lines(m))
        out.append("  next band inward:")
        out.extend("    " + line for line in next_band_lines(m))
        out.append("  stale check:")
        out.extend("    " + line for line in stale_lines(m.stale))
    return "\n".join(out)
