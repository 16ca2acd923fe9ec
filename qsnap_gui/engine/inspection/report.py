"""The inspector's report: plain frozen dataclasses that may cross threads."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from qsnap_gui.domain.codec import Decoded


class TraitRef(NamedTuple):
    trait_id: int
    trait_name: str | None  # None: the trait no longer exists


class TagRef(NamedTuple):
    trait_id: int
    trait_name: str | None
    tag_value: str | None


class TagDiff(NamedTuple):
    parent_id: int
    trait_id: int
    value: str | None


class TagChange(NamedTuple):
    parent_id: int
    trait_id: int
    stored_value: str | None
    current_value: str | None


@dataclass(frozen=True)
class GroupCheck:
    """One trait group of a band, judged against the me_file's current tags."""

    group_id: int
    title: str
    traits: tuple[TraitRef, ...]  # every trait that satisfies the group
    tags: tuple[TagRef, ...]  # the me_file's tags on those traits

    @property
    def satisfied(self) -> bool:
        return bool(self.tags)

    def to_json_satisfied(self) -> dict:
        return {
            "group_id": self.group_id,
            "title": self.title,
            "tags": [list(t) for t in self.tags],
        }

    def to_json_missing(self) -> dict:
        return {
            "group_id": self.group_id,
            "title": self.title,
            "traits": [list(t) for t in self.traits],
        }


@dataclass(frozen=True)
class StaleCheck:
    comparable: bool
    up_to_date: bool = False
    added: tuple[TagDiff, ...] = ()
    removed: tuple[TagDiff, ...] = ()
    changed: tuple[TagChange, ...] = ()
    note: str | None = None  # why not comparable, or what else differs
    rebuilt: dict | None = field(default=None, compare=False)  # what force would write now

    def to_json(self) -> dict | None:
        if not self.comparable:
            return None
        return {
            "up_to_date": self.up_to_date,
            "added": [list(t) for t in self.added],
            "removed": [list(t) for t in self.removed],
            "changed": [list(t) for t in self.changed],
        }


@dataclass(frozen=True)
class Membership:
    population_id: int
    target_id: int | None  # None: the band no longer exists (or belongs to no target)
    target_title: str | None  # None: the target no longer exists
    band_id: int | None  # None: the population row names no band (an orphan)
    band_label: str
    band_title: str | None
    shape: str
    tags: list | None  # decoded nested-array form; None when the value holds no tree
    updated_at: datetime | None
    created_at: datetime | None
    decoded: Decoded
    raw: Any = field(compare=False)  # the stored value as parsed (None: NULL or unreadable)
    raw_text: str | None = field(compare=False)  # stored jsonb text (clipped if unreadable)
    readable: bool
    groups: tuple[GroupCheck, ...]  # every trait group of the band
    is_innermost: bool
    next_band_id: int | None
    next_band_label: str | None
    next_band_groups: tuple[GroupCheck, ...] | None  # every group of the next band inward
    has_tags: bool  # the me_file has at least one tag (bands without groups need only that)
    stale: StaleCheck
    broken: bool = False  # repair would rebuild it (blank values only where the tags disagree)

    @property
    def band_exists(self) -> bool:
        return self.target_id is not None

    @property
    def satisfied_groups(self) -> tuple[GroupCheck, ...]:
        return tuple(g for g in self.groups if g.satisfied)

    @property
    def failed_groups(self) -> tuple[GroupCheck, ...]:
        return tuple(g for g in self.groups if not g.satisfied)

    @property
    def next_band_missing_groups(self) -> tuple[GroupCheck, ...] | None:
        if self.next_band_groups is None:
            return None
        return tuple(g for g in self.next_band_groups if not g.satisfied)

    def to_json(self) -> dict:
        missing = self.next_band_missing_groups
        return {
            "target_id": self.target_id,
            "target_title": self.target_title,
            "band_id": self.band_id,
            "band_label": self.band_label,
            "population_id": self.population_id,
            "shape": self.shape,
            "broken": self.broken,
            "tags": self.tags,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "satisfied_groups": [g.to_json_satisfied() for g in self.satisfied_groups],
            "next_band_missing_groups": None
            if missing is None
            else [g.to_json_missing() for g in missing],
            "stale": self.stale.to_json(),
        }


@dataclass(frozen=True)
class InspectReport:
    me_file_id: int
    display_name: str | None
    tag_count: int
    memberships: tuple[Membership, ...]
    me_file_exists: bool = True  # False: tags or populations of a deleted me_file

    def to_json(self) -> dict:
        return {
            "me_file_id": self.me_file_id,
            "display_name": self.display_name,
            "me_file_exists": self.me_file_exists,
            "memberships": [m.to_json() for m in self.memberships],
        }

    def membership(self, population_id: int) -> Membership | None:
        for m in self.memberships:
            if m.population_id == population_id:
                return m
        return None
