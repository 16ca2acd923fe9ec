"""Targets, their nested bands and the trait groups each band adds."""

from __future__ import annotations

import random

from sqlalchemy import Connection, insert, text

from qsnap_gui.domain.errors import UsageError
from qsnap_gui.store.tables import (
    Target,
    TargetBand,
    TargetBandTraitGroup,
    TraitGroup,
    TraitGroupTrait,
)
from qsnap_gui.tools.demo.catalogue import BASE_TIME, EQUAL_FILLERS, EQUAL_SEGMENT, TARGET_NAMES
from qsnap_gui.tools.demo.spec import DemoSpec, Parent


def _equal_groups(by_name: dict[str, Parent], band: int) -> list[tuple[Parent, list[int]]]:
    """The groups band ``band`` (0 = outermost) of the equal-bands target adds: every band
    asks for a zip and a hobby, the inner two a music genre; the segment answer then puts a
    third of the me_files in each band (any / the last two / the last one of three)."""
    segment = by_name[EQUAL_SEGMENT]
    hobbies, music = (by_name[name] for name in EQUAL_FILLERS)
    zips = by_name["Home Zip Code"]
    return [
        [(zips, list(zips.children)), (hobbies, list(hobbies.children))],
        [(music, list(music.children)), (segment, list(segment.children[1:]))],
        [(segment, list(segment.children[2:]))],
    ][band]


def insert_targets(
    conn: Connection, rng: random.Random, spec: DemoSpec, parents: list[Parent]
) -> list[tuple[int, str]]:
    """Targets of 2-4 nested bands; each band adds 1-2 trait groups to the one outside it."""
    count = spec.targets or rng.randint(4, 6)
    by_name = {p.name: p for p in parents}
    usable = [p for p in parents if p.kind != "zip"]
    targets: list[tuple[int, str]] = []
    group_id = 0
    band_id = 0
    link_rows: list[dict[str, object]] = []
    band_group_rows: list[dict[str, object]] = []
    for t in range(count):
        target_id = t + 1
        title = TARGET_NAMES[t % len(TARGET_NAMES)]
        status = "populated"
        if t == count - 1 and count >= 4:
            status = "not_populated"
        elif t == 2:
            status = "populating"
        conn.execute(
            insert(Target),
            {
                "id": target_id,
                "title": title,
                "description": f"Demo audience {target_id}",
                "marketer_id": 1 + t % 2,
                "population_status": "not_populated",
                "last_populated_at": None,
                "created_at": BASE_TIME,
                "updated_at": BASE_TIME,
            },
        )
        targets.append((target_id, status))
        nbands = spec.bands_per_target or rng.randint(2, 4)
        chosen = rng.sample(usable, 2 * nbands)
        if t == 0 and by_name["Home Own/Rent"] not in chosen:
            chosen[0] = by_name["Home Own/Rent"]
        if t == 0 and spec.broad:
            chosen[0] = by_name["Home Zip Code"]
        equal = t == 0 and spec.bands == "equal"
        if equal and nbands != 3:
            raise UsageError("equal bands are three bands: give bands_per_target=3")
        groups_so_far: list[int] = []
        for b in range(nbands):
            if equal:
                added = _equal_groups(by_name, b)
            else:
                added = []
                for parent in chosen[2 * b : 2 * b + (1 if b == 0 else rng.randint(1, 2))]:
                    share = max(1, round(len(parent.children) * rng.uniform(0.5, 0.85)))
                    if parent.kind == "zip":
                        share = len(parent.children)
                    added.append((parent, rng.sample(parent.children, share)))
            for parent, picked in added:
                group_id += 1
                conn.execute(
                    insert(TraitGroup),
                    {
                        "id": group_id,
                        "title": f"{parent.name}: {len(picked)} of {len(parent.children)}",
                        "description": None,
                        "parent_trait_id": parent.id,
                        "marketer_id": 1,
                        "deactivated_at": None,
                        "created_at": BASE_TIME,
                        "updated_at": BASE_TIME,
                    },
                )
                link_rows.extend(
                    {
                        "trait_group_id": group_id,
                        "trait_id": trait_id,
                        "created_at": BASE_TIME,
                        "updated_at": BASE_TIME,
                    }
                    for trait_id in picked
                )
                groups_so_far.append(group_id)
            band_id += 1
            innermost = b == nbands - 1
            conn.execute(
                insert(TargetBand),
                {
                    "id": band_id,
                    "target_id": target_id,
                    "title": "Bullseye" if innermost else f"Ring {nbands - 1 - b}",
                    "description": None,
                    "is_bullseye": "1" if innermost else "0",
                    "created_at": BASE_TIME,
                    "updated_at": BASE_TIME,
                },
            )
            band_group_rows.extend(
                {
                    "target_band_id": band_id,
                    "trait_group_id": g,
                    "created_at": BASE_TIME,
                    "updated_at": BASE_TIME,
                }
                for g in groups_so_far
            )
    link_rows.append(
        {"trait_group_id": 1, "trait_id": 999_999, "created_at": BASE_TIME, "updated_at": BASE_TIME}
    )
    conn.execute(insert(TraitGroupTrait), link_rows)
    conn.execute(insert(TargetBandTraitGroup), band_group_rows)
    for table, value in (("targets", count), ("target_bands", band_id), ("trait_groups", group_id)):
        conn.execute(
            text(f"select setval(pg_get_serial_sequence('{table}', 'id'), :v)"), {"v": value}
        )
    return targets
