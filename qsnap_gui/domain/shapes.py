"""How each snapshot shape is named, coloured and explained: the one table every view reads.

The colours are plain hex so that any front end can use them; the window's palette is built on
them too, so a shape reads in the same colour wherever it appears.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from qsnap_gui.domain.codec import Shape


class Colour(StrEnum):
    """The few colours qsnap speaks in (Tailwind slate/blue/green/amber/red shades)."""

    GREEN = "#15803d"
    RED = "#b91c1c"
    AMBER = "#b45309"
    BLUE = "#1d4ed8"
    GREY = "#64748b"
    DIM = "#94a3b8"


@dataclass(frozen=True)
class ShapeInfo:
    label: str
    colour: Colour
    tip: str


SHAPE_INFO: dict[Shape, ShapeInfo] = {
    Shape.MISSING: ShapeInfo(
        "Missing", Colour.BLUE, "NULL: never snapshotted; a missing-mode snapshot fills it"
    ),
    Shape.ENVELOPE: ShapeInfo(
        "Envelope", Colour.GREEN, 'The current form, {"tags": [...]}, well formed'
    ),
    Shape.BARE_ARRAY: ShapeInfo(
        "Bare array",
        Colour.AMBER,
        "The nested arrays without the envelope: readable, repair rewrites it",
    ),
    Shape.LEGACY_FLAT: ShapeInfo(
        "Legacy flat",
        Colour.AMBER,
        "An old writer's flat list: no values, no nesting; repair rebuilds it",
    ),
    Shape.EMPTY_OBJECT: ShapeInfo(
        "Empty {}", Colour.AMBER, "{}: looks filled but says nothing; repair rebuilds it"
    ),
    Shape.NULL_VALUES: ShapeInfo(
        "Null values",
        Colour.AMBER,
        "A tag value is null or empty (seen on zip codes): repair rebuilds it",
    ),
    Shape.INVALID: ShapeInfo(
        "Invalid", Colour.AMBER, "None of the known shapes: shown raw; repair rebuilds it"
    ),
}


def shape_info(shape: Shape | str) -> ShapeInfo:
    """The row of ``shape``; an unknown name reads as invalid rather than failing."""
    try:
        return SHAPE_INFO[Shape(shape)]
    except ValueError:
        return SHAPE_INFO[Shape.INVALID]


def shape_label(shape: Shape | str) -> str:
    return shape_info(shape).label
