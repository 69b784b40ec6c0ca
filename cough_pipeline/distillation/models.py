"""A set of distillation models stored as one model-store version: ``<task>/fold<k>/<strategy>/`` each holding a
:class:`~cough_pipeline.classification.networks.NeuralClassifier` (weights + JSON card), and ``models.json``
listing them."""

from __future__ import annotations

import json
from pathlib import Path

from cough_pipeline.classification.errors import read_tagged_json
from cough_pipeline.classification.networks import NeuralClassifier
from cough_pipeline.distillation.generations import FoldModels

INDEX_FILE = "models.json"
INDEX_FORMAT = "cough_pipeline.distilled_models/1"


class DistilledModels:
    """Models by task, then outer fold (:class:`FoldModels`, by strategy)."""

    def __init__(self, tasks: dict[str, dict[int, FoldModels]]):
        self.tasks = tasks

    def without(self, strategies) -> DistilledModels:
        """The same models less those of ``strategies`` (sharing the model objects)."""
        return DistilledModels(
            {
                task: {
                    fold: FoldModels(fold, {s: m for s, m in fm.models.items() if s not in strategies})
                    for fold, fm in folds.items()
                }
                for task, folds in self.tasks.items()
            }
        )

    def entries(self) -> list[tuple[str, int, str]]:
        return [
            (task, fold, strategy)
            for task, folds in self.tasks.items()
            for fold, fold_models in folds.items()
            for strategy in fold_models.models
        ]

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        for task, fold, strategy in self.entries():
            self.tasks[task][fold].models[strategy].save(folder / task / f"fold{fold}" / strategy)
        index = {"format": INDEX_FORMAT, "models": [list(entry) for entry in self.entries()]}
        (folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> DistilledModels:
        folder = Path(folder)
        index = read_tagged_json(folder / INDEX_FILE, INDEX_FORMAT, "a distilled models index")
        tasks: dict[str, dict[int, FoldModels]] = {}
        for task, fold, strategy in index["models"]:
            fold_models = tasks.setdefault(task, {}).setdefault(int(fold), FoldModels(int(fold)))
            fold_models.models[strategy] = NeuralClassifier.load(folder / task / f"fold{fold}" / strategy)
        return cls(tasks)
