"""Every partitions definition of the graph, in one place.

* ``dataset_partitions``: one partition per COVID-19 cough dataset; the per-dataset chain (manifest, quarantine,
  segments, cough list, ...) is partitioned by it, so one dataset re-runs without touching the others.
* ``model_partitions``: one partition per neural classifier; retraining one model is one partition.
* ``balance_partitions``: one partition per ICBHI class-balancing strategy.
* ``rate_partitions``: one partition per low sample rate of the distillation stage (:data:`DISTILLATION_RATES`).
"""

from dagster import StaticPartitionsDefinition

from cough_pipeline.classification.networks import MODEL_NAMES
from cough_pipeline.icbhi.balancing import STRATEGIES
from cough_pipeline.schema import COVID_DATASETS

dataset_partitions = StaticPartitionsDefinition(list(COVID_DATASETS))
balance_partitions = StaticPartitionsDefinition(list(STRATEGIES))
model_partitions = StaticPartitionsDefinition(list(MODEL_NAMES))
#: Distillation partition key -> the target rate in Hz.
DISTILLATION_RATES = {"1k": 1_000, "2k": 2_000}
rate_partitions = StaticPartitionsDefinition(list(DISTILLATION_RATES))
