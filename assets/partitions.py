"""Static partitions: one per COVID-19 cough dataset."""

from dagster import StaticPartitionsDefinition

from cough_pipeline.schema import COVID_DATASETS

dataset_partitions = StaticPartitionsDefinition(list(COVID_DATASETS))
