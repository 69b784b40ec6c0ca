"""The resources every asset gets, built from config and environment variables."""

from resources.alerts import AlertWebhook
from resources.cough_model import CoughModelSource
from resources.data_roots import DataRoots
from resources.model_store import ModelIOManager, ModelStore
from resources.settings import NoiseBank, PipelineSettings
from resources.storage import ParquetCatalogIOManager, Storage


def build_resources(storage_root: str = "", catalog: str = "") -> dict:
    """Resource instances keyed as the assets expect them; empty paths use the environment/defaults."""
    storage = Storage(root=storage_root, catalog=catalog)
    data_roots = DataRoots(storage=storage)
    model_store = ModelStore(storage=storage)
    return {
        "storage": storage,
        "data_roots": data_roots,
        "settings": PipelineSettings(),
        "noise_bank": NoiseBank(data_roots=data_roots),
        "table_io_manager": ParquetCatalogIOManager(storage=storage),
        "cough_model_source": CoughModelSource(),
        "model_store": model_store,
        "model_io_manager": ModelIOManager(store=model_store),
        "alert_webhook": AlertWebhook(),
    }
