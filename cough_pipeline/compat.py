"""Compatibility shims for third-party libraries that predate NumPy 2.

scaper 1.6.5 (the last release) writes ``-np.Inf`` when it instantiates events; NumPy 2 removed that alias, so
every foreground event fails with ``AttributeError``. Rather than pin NumPy below 2, :func:`import_scaper` restores
the alias (only when it is missing) before handing out the module. Every import of scaper in this project goes
through :func:`import_scaper`, so the fix is applied exactly once, in one place.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np


def restore_numpy_aliases() -> None:
    """Give NumPy back the ``np.Inf`` alias scaper uses, if this NumPy lacks it; a no-op on NumPy 1.x."""
    if not hasattr(np, "Inf"):
        np.Inf = np.inf


def import_scaper() -> ModuleType:
    """The ``scaper`` module, imported after :func:`restore_numpy_aliases` so it runs under NumPy 2."""
    restore_numpy_aliases()
    import scaper

    return scaper
