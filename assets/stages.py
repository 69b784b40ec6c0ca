"""The order in which the command-line runners (``make demo``, ``make backfill``) materialise the graph.

A run materialises either unpartitioned assets or one partition of assets that share a partitions definition, so
the graph is cut into stages: each stage holds assets of one partitioning, and comes after every stage it reads
from. Within a level the unpartitioned stage runs first, then the partitioned ones. An asset's level is the highest
level of its parents, plus one where a parent is partitioned and the asset is not, or is partitioned differently:
``cough_list`` (per dataset) reads the unpartitioned ``cough_filter_model`` in level 0, ``separated_clips`` reads
every ``cough_list`` partition in level 1, and ``cough_features`` (per dataset) reads ``separated_clips`` in level 1
too, after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dagster import AssetsDefinition, PartitionsDefinition


@dataclass(frozen=True)
class Stage:
    """Assets of one partitioning that can run together once every earlier stage has run."""

    level: int
    partitions_def: PartitionsDefinition | None
    assets: tuple[AssetsDefinition, ...]

    @property
    def keys(self) -> set:
        return {key for asset in self.assets for key in asset.keys}


def _parents(asset: AssetsDefinition) -> set:
    """Asset keys ``asset`` reads that it does not produce itself."""
    return {dep.asset_key for spec in asset.specs for dep in spec.deps} - set(asset.keys)


def _step(parent: AssetsDefinition, child: AssetsDefinition) -> int:
    """0 where ``child`` may share ``parent``'s level, else 1. Within a level the unpartitioned run goes first, so
    a partitioned asset may read an unpartitioned one of its own level; every other change of partitioning (into
    an unpartitioned asset, or between partitions definitions) needs a later level."""
    if parent.partitions_def == child.partitions_def or parent.partitions_def is None:
        return 0
    return 1


def stages(assets: Sequence[AssetsDefinition]) -> list[Stage]:
    """``assets`` cut into stages in run order (by level; unpartitioned first within a level).

    Args:
        assets: the definitions to order (parents outside this list are taken as already materialised).
    """
    owner = {key: asset for asset in assets for key in asset.keys}
    levels: dict[int, int] = {}

    def level_of(asset: AssetsDefinition) -> int:
        if id(asset) not in levels:
            levels[id(asset)] = 0  # a placeholder: the graph is acyclic, so it is never read back
            parents = {owner[key] for key in _parents(asset) if key in owner}
            levels[id(asset)] = max((level_of(p) + _step(p, asset) for p in parents), default=0)
        return levels[id(asset)]

    grouped: dict[tuple[int, object], list[AssetsDefinition]] = {}
    for asset in assets:
        grouped.setdefault((level_of(asset), asset.partitions_def), []).append(asset)
    order = sorted(grouped, key=lambda k: (k[0], k[1] is not None, str(k[1])))
    return [Stage(level, partitions_def, tuple(grouped[(level, partitions_def)])) for level, partitions_def in order]
