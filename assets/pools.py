"""Concurrency pools: the instance config (``dagster.yaml``) limits how many steps of a pool run at once.

Training and mixture generation each keep every core busy for minutes; two of them side by side on a small machine
only slow both down and double the peak memory, so the production instance gives each pool a limit of 1. Other
steps run freely.
"""

#: Neural and classical model training (separator, pruned separator, classifiers, classical models).
TRAINING_POOL = "training"
#: Scaper mixture generation.
MIXTURES_POOL = "mixtures"
