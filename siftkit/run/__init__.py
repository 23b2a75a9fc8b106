"""Running one protocol: the config, models, stages, the objective, the training loop, evaluation, checkpoints, output folders, records."""
