"""Field checks of the ICBHI config dataclasses, raised as each module's own error type."""

from __future__ import annotations

from cough_pipeline.bounds import check_fields


def check_config(instance, error: type[ValueError] = ValueError) -> None:
    """:func:`cough_pipeline.bounds.check_fields` on dataclass ``instance`` (bounds and ``Literal`` choices of its
    fields), raising ``error`` with the same message, so callers catching a module's error type see these too."""
    try:
        check_fields(instance)
    except ValueError as problem:
        if isinstance(problem, error):
            raise
        raise error(str(problem)) from None
