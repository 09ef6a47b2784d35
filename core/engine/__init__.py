"""The machinery that turns a stack into results: run folders, training state, evaluation,
tiled inference and distributed helpers. Trainers (plugins) assemble these pieces."""
