"""File names for the artefacts written per id (segments, windows, augmented copies).

Sanitising an id alone is not injective (``a é`` and ``a ü``, ``a b`` and ``a_b`` become the same name), so one
recording's files would overwrite another's. Every artefact stem is therefore a readable, sanitised prefix plus a
short hash of the exact id: unique per id by construction, still recognisable in a file browser.
"""

from __future__ import annotations

import hashlib
import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: Hex digits of SHA-1 kept: 48 bits, so among a million ids the chance of any collision is about 2e-3.
HASH_DIGITS = 12
#: Characters of the sanitised id kept in front of the hash, so stems stay well under file-name limits.
READABLE_CHARS = 60


def artefact_stem(identifier: str) -> str:
    """``ccs:train_001`` -> ``ccs_train_001-3b1f0c2a9d4e``: a file-name-safe stem that differs for different ids."""
    if not isinstance(identifier, str) or not identifier:
        raise ValueError(f"an artefact needs a non-empty string id, got {identifier!r}")
    readable = _UNSAFE.sub("_", identifier)[:READABLE_CHARS].strip("._") or "id"
    digest = hashlib.sha1(identifier.encode("utf-8")).hexdigest()[:HASH_DIGITS]
    return f"{readable}-{digest}"
