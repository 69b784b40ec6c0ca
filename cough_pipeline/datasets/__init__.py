"""One loader per source, each reading the dataset's native layout (its module docstring; README lists the folders).

``get_loader(name, **options)`` returns a loader whose ``read_metadata(root)`` gives a
:class:`~cough_pipeline.datasets.base.MetadataRead`; :func:`cough_pipeline.manifest.build_manifest` turns that into
the manifest and its quarantine.
"""

from __future__ import annotations

from typing import Protocol

from cough_pipeline.datasets.aicovidvn import AicovidvnLoader
from cough_pipeline.datasets.base import LayoutError, MetadataRead
from cough_pipeline.datasets.ccs import CcsLoader
from cough_pipeline.datasets.coswara import CoswaraLoader
from cough_pipeline.datasets.coughvid import CoughvidLoader
from cough_pipeline.datasets.iatos import IatosLoader
from cough_pipeline.datasets.icbhi import IcbhiLoader
from cough_pipeline.datasets.ukcovid import UkcovidLoader
from cough_pipeline.datasets.virufy import VirufyLoader


class DatasetLoader(Protocol):
    """Reads one dataset's metadata from its native layout; ``name`` is the dataset (and partition) name."""

    name: str

    def read_metadata(self, root):
        """Candidate rows, metadata-level quarantine rows and the audio files of the layout under ``root``;
        raises :class:`LayoutError` when ``root`` matches none of the dataset's layouts."""
        ...


LOADERS: dict[str, type] = {
    loader.name: loader
    for loader in (
        CcsLoader,
        IatosLoader,
        CoswaraLoader,
        AicovidvnLoader,
        CoughvidLoader,
        UkcovidLoader,
        IcbhiLoader,
        VirufyLoader,
    )
}


def get_loader(dataset: str, **options) -> DatasetLoader:
    """The loader for ``dataset``, configured with loader-specific ``options``."""
    if dataset not in LOADERS:
        raise KeyError(f"no loader for dataset {dataset!r}; known: {sorted(LOADERS)}")
    return LOADERS[dataset](**options)


__all__ = ["LOADERS", "DatasetLoader", "LayoutError", "MetadataRead", "get_loader"]
