"""Dagster run config mirrored from the library's frozen config dataclasses, so defaults live in one place.

Choice fields typed ``Literal`` become Dagster enums and bounded numbers (``Annotated[float, Bounds(...)]``, see
:mod:`cough_pipeline.bounds`) become :class:`BoundedNumber` config scalars, so a bad value fails when the run is
launched, with Dagster's config error naming the field, before any step runs.
"""

import dataclasses
import typing

import pydantic
from dagster import Config

from cough_pipeline.bounds import bounds_of
from resources.config_types import BoundedNumber, bounded, choices, plain

__all__ = ["BoundedNumber", "LibraryConfig", "bounded", "mirror"]


class LibraryConfig(Config):
    """A Dagster config whose fields are those of a library dataclass; ``library_config()`` builds that dataclass."""

    library_type: typing.ClassVar[type]
    tuple_fields: typing.ClassVar[frozenset[str]] = frozenset()
    library_fields: typing.ClassVar[frozenset[str]] = frozenset()

    def library_config(self, **overrides):
        """The library dataclass of these values; ``overrides`` set fields the config leaves to the caller (e.g.
        ``epochs`` from the profile when the run config does not set it)."""
        # Fields a subclass adds (e.g. a nested config of another library type) are the asset's, not the library's.
        # A list of choices left at its default holds the default's strings (Dagster cannot serialise enum members
        # as defaults), which pydantic would warn about when dumping; plain() reads strings and members alike.
        dumped = self.model_dump(warnings=False)
        values = {name: plain(value) for name, value in dumped.items() if name in self.library_fields}
        for name in self.tuple_fields:
            values[name] = tuple(values[name])
        for name, value in overrides.items():
            if values.get(name) is None:
                values[name] = value
        return self.library_type(**values)


def _config_type(hint, name: str):
    """The run-config type of a dataclass field's hint, and whether it was a tuple.

    Dagster config has no tuples: ``tuple[X, ...]`` and ``tuple[X, X]`` become ``list[X]``, and a list of
    ``Literal`` choices becomes a list of an Enum of them (:func:`choices`). Bounded numbers become
    :class:`BoundedNumber` scalars (see :func:`bounded`).
    """
    if bounds_of(hint) is not None:
        return bounded(hint), False
    optional = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if len(optional) == 1 and len(typing.get_args(hint)) == 2 and bounds_of(optional[0]) is not None:
        return typing.Optional[bounded(optional[0])], False  # noqa: UP045 - `X | None` needs a type, not a scalar
    if typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    if typing.get_origin(hint) is not tuple:
        return hint, False
    items = {arg for arg in typing.get_args(hint) if arg is not Ellipsis}
    if len(items) != 1:
        raise TypeError(f"cannot mirror {hint}: a tuple field needs one item type")
    item = items.pop()
    if typing.get_origin(item) is typing.Literal:
        item = choices(name, typing.get_args(item))
    return list[bounded(item)], True


def mirror(
    dataclass_type: type, description: str, exclude: frozenset[str] = frozenset(), unset: frozenset[str] = frozenset()
) -> type[LibraryConfig]:
    """A :class:`LibraryConfig` subclass with ``dataclass_type``'s fields, types and defaults (tuples as lists).

    Fields in ``exclude`` are left out (the asset supplies them to :meth:`LibraryConfig.library_config`); fields in
    ``unset`` are optional with default ``None``, meaning "the asset decides" (e.g. the profile's epochs).
    """
    hints = typing.get_type_hints(dataclass_type, include_extras=True)
    fields, tuples = {}, set()
    for field in dataclasses.fields(dataclass_type):
        if field.name in exclude:
            continue
        hint, is_tuple = _config_type(hints[field.name], f"{dataclass_type.__name__}_{field.name}")
        default = list(field.default) if is_tuple else field.default
        if field.name in unset:
            hint, default = typing.Optional[hint], None  # noqa: UP045 - `X | None` needs a type, not a scalar
        fields[field.name] = (hint, default)
        if is_tuple:
            tuples.add(field.name)
    model = pydantic.create_model(f"{dataclass_type.__name__}Settings", __base__=LibraryConfig, **fields)
    model.library_type = dataclass_type
    model.tuple_fields = frozenset(tuples)
    model.library_fields = frozenset(fields)
    model.__doc__ = description
    return model
