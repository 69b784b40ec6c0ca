"""Dagster run config mirrored from the library's frozen config dataclasses, so defaults live in one place."""

import dataclasses
import typing

import pydantic
from dagster import Config


class LibraryConfig(Config):
    """A Dagster config whose fields are those of a library dataclass; ``library_config()`` builds that dataclass."""

    library_type: typing.ClassVar[type]

    def library_config(self):
        return self.library_type(**self.model_dump())


def mirror(dataclass_type: type, description: str) -> type[LibraryConfig]:
    """A :class:`LibraryConfig` subclass with ``dataclass_type``'s fields, types and defaults."""
    hints = typing.get_type_hints(dataclass_type)
    fields = {f.name: (hints[f.name], f.default) for f in dataclasses.fields(dataclass_type)}
    model = pydantic.create_model(f"{dataclass_type.__name__}Settings", __base__=LibraryConfig, **fields)
    model.library_type = dataclass_type
    model.__doc__ = description
    return model
