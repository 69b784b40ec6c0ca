"""Where each raw dataset lives, and how its loader is configured.

A root comes from (in order) this resource's config, the environment variable ``COUGH_PIPELINE_<NAME>_ROOT``
(``COUGH_PIPELINE_COUGHVID_ROOT=/data/coughvid``), or — when neither is set — the embedded demo corpus, which is
generated on first use under the storage root.
"""

import os
from pathlib import Path

from dagster import ConfigurableResource, ResourceDependency

from cough_pipeline.demo_corpus import generate_demo_corpus
from resources.storage import Storage

DEMO_SOURCE = "demo"


def env_var_for(dataset: str) -> str:
    return f"COUGH_PIPELINE_{dataset.upper()}_ROOT"


class DataRoots(ConfigurableResource):
    """Per-dataset raw-data roots plus loader options; empty roots mean "use the demo corpus"."""

    storage: ResourceDependency[Storage]
    ccs: str = ""
    iatos: str = ""
    coswara: str = ""
    aicovidvn: str = ""
    coughvid: str = ""
    ukcovid: str = ""
    icbhi: str = ""
    virufy: str = ""
    #: An ESC-50 folder for the distillation stage (``meta/*.csv`` + ``audio/``).
    esc50: str = ""
    noise: str = ""
    demo_size: str = "small"
    demo_seed: int = 0
    #: Loader options (see each loader's docstring).
    coughvid_cough_threshold: float = 0.8
    coswara_ambiguous_as_negative: bool = False
    include_non_cough: bool = False
    virufy_unit: str = "original"

    def configured_root(self, dataset: str) -> str:
        """The root set by config or environment, or ``""`` when the demo corpus applies."""
        return getattr(self, dataset) or os.environ.get(env_var_for(dataset), "")

    def source(self, dataset: str) -> str:
        """``"demo"`` or the configured path, for metadata and logs."""
        return self.configured_root(dataset) or DEMO_SOURCE

    def root_for(self, dataset: str) -> Path:
        """The folder to read ``dataset`` from; generates the demo copy of it if needed."""
        configured = self.configured_root(dataset)
        if configured:
            root = Path(configured).expanduser()
            if not root.is_dir():
                raise FileNotFoundError(
                    f"{dataset}: configured root {root} is not a folder (set by config or ${env_var_for(dataset)})"
                )
            return root
        return generate_demo_corpus(self.demo_dir, size=self.demo_size, seed=self.demo_seed, datasets=[dataset])[
            dataset
        ]

    def demo_corpus(self, datasets) -> Path:
        """The demo corpus root, with ``datasets`` generated (used for demo-only inputs such as training clips)."""
        generate_demo_corpus(self.demo_dir, size=self.demo_size, seed=self.demo_seed, datasets=list(datasets))
        return self.demo_dir

    @property
    def demo_dir(self) -> Path:
        return self.storage.root_path / "demo_corpus"

    def loader_options(self, dataset: str) -> dict:
        """Keyword options for ``cough_pipeline.datasets.get_loader(dataset, ...)``."""
        options = {
            "coughvid": {"cough_threshold": self.coughvid_cough_threshold},
            "coswara": {
                "ambiguous_as_negative": self.coswara_ambiguous_as_negative,
                "include_non_cough": self.include_non_cough,
            },
            "ukcovid": {"include_non_cough": self.include_non_cough},
            "virufy": {"unit": self.virufy_unit},
        }
        return options.get(dataset, {})
