"""Run-config types with bounds: a bad number fails when the run is launched, naming the field.

Dagster's config schema has no numeric ranges. A config type's ``post_process`` is the hook Dagster runs while it
resolves a run's config, before any step: :class:`BoundedNumber` checks the field's :class:`Bounds` there, so an
out-of-range value is a ``DagsterInvalidConfigError`` with the field's path. The same bounds go to pydantic, so a
Config object built directly in Python is checked too.
"""

import enum
import typing
from typing import Any

from dagster._config.config_type import ConfigScalar, ConfigScalarKind
from dagster._config.errors import PostProcessingError
from pydantic_core import core_schema

from cough_pipeline.bounds import Bounds, bounds_of


class FieldScalar(ConfigScalar):
    """A Dagster config scalar that is also a pydantic field type: Dagster resolves a field annotated with an
    instance of it to the instance itself, so its ``post_process`` runs when a run's config is resolved.

    Subclasses set ``python_type`` and define ``post_process`` and ``__get_pydantic_core_schema__``.
    """

    python_type: type

    def __call__(self, value):
        """Convert like the Python type (``typing.Optional`` requires its argument to be callable)."""
        return self.python_type(value)

    def __hash__(self) -> int:
        return hash((type(self), self.key))

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.key == self.key


class BoundedNumber(FieldScalar):
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

    def __get_pydantic_core_schema__(self, source: Any, handler) -> core_schema.CoreSchema:
        make = core_schema.float_schema if self.python_type is float else core_schema.int_schema
        return make(**self.bounds.as_dict())


def bounded(hint):
    """The run-config field type of a library hint: ``Annotated[int|float, Bounds(...)]`` becomes a
    :class:`BoundedNumber`; anything else is returned unchanged. Use it in hand-written Configs:
    ``separation_fraction: bounded(Fraction) = 0.5``."""
    bounds = bounds_of(hint)
    if bounds is None:
        return hint
    return BoundedNumber(typing.get_args(hint)[0], bounds)


def choices(name: str, values) -> type[enum.Enum]:
    """A string Enum of ``values`` for a *list* of choices in run config (Dagster takes ``Literal`` only as a
    field's own type; a list's items must be an Enum). Members are named and valued by the choice itself; read
    them back with :func:`plain`."""
    return enum.Enum(name, {str(value): str(value) for value in values}, type=str)


def plain(value):
    """``value`` with Enum members replaced by their values (recursively through lists and tuples)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return type(value)(plain(item) for item in value)
    return value


class OneOf(FieldScalar):
    """A string run-config scalar that must be one of ``values``, checked at launch (``post_process``) but not when
    a resource is built directly in Python, where the owner reports a bad value itself (e.g. a settings object
    whose method names where the value came from). ``problem(value)`` words the launch error."""

    python_type = str

    def __init__(self, name: str, values, problem=None):
        self.values = tuple(values)
        self.problem = problem or (lambda value: f"must be one of {list(self.values)}, got {value!r}")
        super().__init__(key=f"OneOf_{name}", given_name=f"OneOf_{name}", scalar_kind=ConfigScalarKind.STRING)

    def post_process(self, value):
        if value is not None and value not in self.values:
            raise PostProcessingError(self.problem(value))
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler) -> core_schema.CoreSchema:
        return core_schema.str_schema()
