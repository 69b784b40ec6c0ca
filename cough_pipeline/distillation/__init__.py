"""Low-sample-rate students by self-distillation: the low-rate transform and the distillation loss."""
