"""Where a pretrained cough/non-cough model comes from, if one is configured.

Empty ``folder`` (and no ``$COUGH_PIPELINE_COUGH_MODEL_DIR``) means "train one": the ``cough_filter_model``
asset then fits XGBoost on labelled clips. A folder holds either the COUGHVID files
(``cough_classifier.json`` + ``cough_classification_scaler.json``) or a model this pipeline saved
(``booster.json`` + ``scaler.json`` + ``model_card.json``).
"""

import os
from pathlib import Path

from dagster import ConfigurableResource

COUGHVID_FILES = ("cough_classifier.json", "cough_classification_scaler.json")
SAVED_FILES = ("booster.json", "scaler.json")


class CoughModelSource(ConfigurableResource):
    """A folder with a pretrained cough model (optional)."""

    folder: str = ""

    def pretrained_folder(self) -> Path | None:
        """The configured folder, or ``None`` when the model is to be trained."""
        configured = self.folder or os.environ.get("COUGH_PIPELINE_COUGH_MODEL_DIR", "")
        if not configured:
            return None
        folder = Path(configured).expanduser()
        if not any(all((folder / name).is_file() for name in files) for files in (COUGHVID_FILES, SAVED_FILES)):
            raise FileNotFoundError(
                f"cough model folder {folder} holds neither {' + '.join(COUGHVID_FILES)} nor "
                f"{' + '.join(SAVED_FILES)} (set by config or $COUGH_PIPELINE_COUGH_MODEL_DIR)"
            )
        return folder
