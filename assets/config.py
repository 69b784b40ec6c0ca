"""Dagster run config mirrored from the library's frozen config dataclasses, so defaults live in one place.

Choice fields typed ``Literal`` become Dagster enums and bounded numbers (``Annotated[float, Bounds(...)]``, see
:mod:`cough_pipeline.bounds`) become :class:`BoundedNumber` config scalars, so a bad value fails when the run is
launched, with Dagster's config error naming the field, before any step runs.
"""

import dataclasses
import typing
from typing import Any

import pydantic
from dagster import Config
from dagster._config.config_type import ConfigScalar, ConfigScalarKind
from dagster._config.errors import PostProcessingError
from pydantic_core import core_schema

from cough_pipeline.bounds import Bounds, bounds_of


class BoundedNumber(ConfigScalar):
    """A float or int run-config scalar with bounds, usable as a pydantic field type.

    Dagster's config schema has no numeric ranges; a config type's ``post_process`` is its hook for validation
    at launch (``DagsterInvalidConfigError`` naming the path). The same bounds go to pydantic, so a Config object
    built directly in Python is checked too.
    """

    def __init__(self, python_type: type, bounds: Bounds):
        if python_type not in (int, float):
            raise TypeError(f"bounds apply to int or float fields, not {python_type}")
        self.python_type, self.bounds = python_type, bounds
        limits = ",".join(f"{k}{v:g}" for k, v in bounds.as_dict().items())
        name = f"{python_type.__name__.capitalize()}[{limits}]"
        kind = ConfigScalarKind.FLOAT if python_type is float else ConfigScalarKind.INT
        super().__init__(key=name, given_name=name, scalar_kind=kind, description=f"{python_type.__name__} {limits}")

    def post_process(self, value):
        problem = self.bounds.problem(value)
        if problem:
            raise PostProcessingError(problem)
        return float(value) if self.python_type is float and value is not None else value

    def __call__(self, value):
        """Convert like the Python type (``typing.Optional`` requires its argument to be callable)."""
        return self.python_type(value)

    def __get_pydantic_core_schema__(self, source: Any, handler) -> core_schema.CoreSchema:
        make = core_schema.float_schema if self.python_type is float else core_schema.int_schema
        return make(**self.bounds.as_dict())

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other) -> bool:
        return isinstance(other, BoundedNumber) and other.key == self.key


def bounded(hint):
    """The run-config field type of a library hint: ``Annotated[int|float, Bounds(...)]`` becomes a
    :class:`BoundedNumber`; anything else is returned unchanged. Use it in hand-written Configs:
    ``separation_fraction: bounded(Fraction) = 0.5``."""
    bounds = bounds_of(hint)
    if bounds is None:
        return hint
    return BoundedNumber(typing.get_args(hint)[0], bounds)


class LibraryConfig(Config):
    """A Dagster config whose fields are those of a library dataclass; ``library_config()`` builds that dataclass."""

    library_type: typing.ClassVar[type]
    tuple_fields: typing.ClassVar[frozenset[str]] = frozenset()

    def library_config(self):
        values = self.model_dump()
        for name in self.tuple_fields:
            values[name] = tuple(values[name])
        return self.library_type(**values)


def _config_type(hint):
    """The run-config type of a dataclass field's hint, and whether it was a tuple.

    Dagster config has no tuples: ``tuple[X, ...]`` and ``tuple[X, X]`` become ``list[X]``. Bounded numbers become
    :class:`BoundedNumber` scalars (see :func:`bounded`).
    """
    if bounds_of(hint) is not None:
        return bounded(hint), False
    if typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    if typing.get_origin(hint) is not tuple:
        return hint, False
    items = {arg for arg in typing.get_args(hint) if arg is not Ellipsis}
    if len(items) != 1:
        raise TypeError(f"cannot mirror {hint}: a tuple field needs one item type")
    return list[bounded(items.pop())], True


def mirror(dataclass_type: type, description: str) -> type[LibraryConfig]:
    """A :class:`LibraryConfig` subclass with ``dataclass_type``'s fields, types and defaults (tuples as lists)."""
    hints = typing.get_type_hints(dataclass_type, include_extras=True)
    fields, tuples = {}, set()
    for field in dataclasses.fields(dataclass_type):
        hint, is_tuple = _config_type(hints[field.name])
        fields[field.name] = (hint, list(field.default) if is_tuple else field.default)
        if is_tuple:
            tuples.add(field.name)
    model = pydantic.create_model(f"{dataclass_type.__name__}Settings", __base__=LibraryConfig, **fields)
    model.library_type = dataclass_type
    model.tuple_fields = frozenset(tuples)
    model.__doc__ = description
    return model
