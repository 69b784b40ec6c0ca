"""Dagster run config mirrored from the library's frozen config dataclasses, so defaults live in one place."""

import dataclasses
import typing

import pydantic
from dagster import Config

from cough_pipeline.bounds import bounds_of


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

    Dagster config has no tuples: ``tuple[X, ...]`` and ``tuple[X, X]`` become ``list[X]``. :class:`Bounds` in an
    ``Annotated`` hint become the pydantic constraints of the config field.
    """
    bounds = bounds_of(hint)
    if typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    is_tuple = typing.get_origin(hint) is tuple
    if is_tuple:
        items = {arg for arg in typing.get_args(hint) if arg is not Ellipsis}
        if len(items) != 1:
            raise TypeError(f"cannot mirror {hint}: a tuple field needs one item type")
        hint = list[items.pop()]
    if bounds is not None:
        hint = typing.Annotated[hint, pydantic.Field(**bounds.as_dict())]
    return hint, is_tuple


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
