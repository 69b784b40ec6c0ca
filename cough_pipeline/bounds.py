"""Numeric bounds for config dataclass fields, declared once in the type and checked everywhere.

A field typed ``Fraction`` or ``Annotated[int, Bounds(ge=1)]`` carries its bounds with it: :func:`check_bounds`
enforces them in a dataclass's ``__post_init__``, and the Dagster config mirrored from the dataclass turns them
into the same constraints on its run-config field, so a bad value is refused at launch naming the field.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Annotated


@dataclass(frozen=True)
class Bounds:
    """Inclusive (``ge``/``le``) or exclusive (``gt``/``lt``) numeric bounds of a field."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def problem(self, value) -> str | None:
        """Why ``value`` is out of bounds, or ``None``."""
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        for limit, ok, word in (
            (self.ge, lambda v, x: v >= x, ">="),
            (self.gt, lambda v, x: v > x, ">"),
            (self.le, lambda v, x: v <= x, "<="),
            (self.lt, lambda v, x: v < x, "<"),
        ):
            if limit is not None and not ok(value, limit):
                return f"must be {word} {limit:g}, got {value!r}"
        return None

    def as_dict(self) -> dict[str, float]:
        return {name: value for name, value in dataclasses.asdict(self).items() if value is not None}


#: A share in [0, 1].
Fraction = Annotated[float, Bounds(ge=0.0, le=1.0)]
#: A probability threshold in [0, 1].
Probability = Annotated[float, Bounds(ge=0.0, le=1.0)]
#: A count of at least one (workers, epochs, sizes).
PositiveInt = Annotated[int, Bounds(ge=1)]
#: A count of zero or more.
NonNegativeInt = Annotated[int, Bounds(ge=0)]
#: A quantity of zero or more (seconds, margins).
NonNegativeFloat = Annotated[float, Bounds(ge=0.0)]
#: A strictly positive quantity (seconds, hertz, rates).
PositiveFloat = Annotated[float, Bounds(gt=0.0)]
#: A random seed.
Seed = Annotated[int, Bounds(ge=0)]


def bounds_of(hint) -> Bounds | None:
    """The :class:`Bounds` in an ``Annotated`` type hint, if any."""
    if typing.get_origin(hint) is Annotated:
        for extra in hint.__metadata__:
            if isinstance(extra, Bounds):
                return extra
    return None


def _choices(hint) -> tuple | None:
    """The allowed values of a ``Literal`` hint (also inside ``Annotated``), if it is one."""
    if typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    return typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else None


def _optional_item(hint):
    """``X`` for an ``X | None`` hint, else ``hint``."""
    args = typing.get_args(hint)
    if len(args) == 2 and type(None) in args and typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(arg for arg in args if arg is not type(None))
    return hint


def check_fields(instance) -> None:
    """Raise ``ValueError`` naming the first field of dataclass ``instance`` whose value is out of its bounds or
    not one of its ``Literal`` choices (a tuple/list field of literals is checked item by item; an ``X | None``
    field is checked as ``X`` unless it is ``None``)."""
    hints = typing.get_type_hints(type(instance), include_extras=True)
    for field in dataclasses.fields(instance):
        hint, value = _optional_item(hints.get(field.name)), getattr(instance, field.name)
        bounds = bounds_of(hint)
        problem = bounds.problem(value) if bounds else None
        if problem:
            raise ValueError(f"{type(instance).__name__}.{field.name} {problem}")
        item_hint = hint
        if typing.get_origin(hint) in (tuple, list) and typing.get_args(hint):
            item_hint = typing.get_args(hint)[0]
            values = value
        else:
            values = (value,)
        choices = _choices(item_hint)
        if choices is not None:
            for item in values:
                if item not in choices:
                    raise ValueError(
                        f"{type(instance).__name__}.{field.name} must be one of {list(choices)}, got {item!r}"
                    )
