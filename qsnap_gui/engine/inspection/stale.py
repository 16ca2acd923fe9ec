"""Stale check ("is what we stored still true?"): the stored tree is compared with what the
reference ``codec.build_snapshot`` gives from the me_file's current tags and the band's current
groups, i.e. what a force re-snapshot would write now. Child tags are matched on
(parent id, trait id): a pair only in the rebuilt tree is *added*, only in the stored tree is
*removed*, in both with another value is *changed* (stored value -> current value).
``up_to_date`` means the stored tree equals the rebuilt one up to the order of tied entries
(names and display orders included); the form (envelope or bare array) is the shape's
business, not the stale check's.
"""

from __future__ import annotations

from collections.abc import Iterable

from qsnap_gui.domain.codec import Decoded, ParentTrait, Shape, decode, same_up_to_ties
from qsnap_gui.engine.inspection.report import StaleCheck, TagChange, TagDiff

# Shapes whose tree can be compared with a rebuilt snapshot.
COMPARABLE = (Shape.ENVELOPE, Shape.NULL_VALUES, Shape.BARE_ARRAY, Shape.LEGACY_FLAT)


def _children(parents: Iterable[ParentTrait]) -> dict[tuple[int, int], list[str | None]]:
    out: dict[tuple[int, int], list[str | None]] = {}
    for p in parents:
        for c in p.children:
            out.setdefault((p.trait_id, c.trait_id), []).append(c.value)
    return out


def _sort_key(item: tuple) -> tuple:
    return (item[0], item[1], *((v is None, v or "") for v in item[2:]))


def _diff_values(
    was: list[str | None], now: list[str | None]
) -> tuple[list[str | None], list[str | None], list[tuple[str | None, str | None]]]:
    """(removed, added, changed) values of one (parent, trait) key, as multisets."""
    if len(was) == 1 and len(now) == 1:
        return ([], [], []) if was[0] == now[0] else ([], [], [(was[0], now[0])])
    was, now = list(was), list(now)
    for v in list(was):
        if v in now:
            now.remove(v)
            was.remove(v)
    pairs = min(len(was), len(now))
    return was[pairs:], now[pairs:], list(zip(was[:pairs], now[:pairs], strict=True))


def compare_snapshot(stored: Decoded, rebuilt: dict) -> StaleCheck:
    """Compare a decoded stored snapshot with the envelope a re-snapshot would write now."""
    shape = stored.shape
    if shape not in COMPARABLE:
        reason = {
            Shape.MISSING: "not comparable: never snapshotted",
            Shape.EMPTY_OBJECT: "not comparable: the stored empty object says nothing",
        }.get(shape, f"not comparable: invalid snapshot ({stored.error})")
        return StaleCheck(comparable=False, note=reason, rebuilt=rebuilt)
    current = decode(rebuilt)
    legacy = shape is Shape.LEGACY_FLAT
    if not legacy and same_up_to_ties(stored.parents, current.parents):
        return StaleCheck(comparable=True, up_to_date=True, rebuilt=rebuilt)
    old, new = _children(stored.parents), _children(current.parents)
    added: list[TagDiff] = []
    removed: list[TagDiff] = []
    changed: list[TagChange] = []
    for key, now in new.items():
        if key not in old:
            added.extend(TagDiff(*key, v) for v in now)
    for key, was in old.items():
        now = new.get(key)
        if now is None:
            removed.extend(TagDiff(*key, v) for v in was)
        elif legacy:
            # the legacy form holds trait names, not values: compare by trait only, and show
            # the extra entries with their value now / the name the legacy entry gave
            extra = len(now) - len(was)
            added.extend(TagDiff(*key, v) for v in now[len(now) - extra :] if extra > 0)
            removed.extend(TagDiff(*key, v) for v in was[len(was) + extra :] if extra < 0)
        else:
            gone, came, swapped = _diff_values(was, now)
            removed.extend(TagDiff(*key, v) for v in gone)
            added.extend(TagDiff(*key, v) for v in came)
            changed.extend(TagChange(*key, a, b) for a, b in swapped)
    up_to_date = False
    note = None
    if legacy:
        note = "legacy flat form holds no values: compared by trait only; repair rewrites it"
    elif not (added or removed or changed):
        note = "same tags, but parent names, display orders or order differ from the traits now"
    return StaleCheck(
        comparable=True,
        up_to_date=up_to_date,
        added=tuple(sorted(added, key=_sort_key)),
        removed=tuple(sorted(removed, key=_sort_key)),
        changed=tuple(sorted(changed, key=_sort_key)),
        note=note,
        rebuilt=rebuilt,
    )
