"""Training: data loading, the synthetic demo data, the sklearn pipeline,
evaluation and ``driftloop train``. Talks only to the registry."""
