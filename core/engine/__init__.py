"""The machinery that turns a stack into results: run folders, training state, evaluation,
tiled inference and distributed helpers. Trainers (plugins) assemble these pieces.

Public modules: ``training`` (TrainingJob, LossStep), ``loop`` (LoopOptions, TrainingLoop: the trainer
contract), ``checkpoints``, ``runs``, ``evaluation``, ``inference``, ``distributed``, ``prepare``,
``export`` and ``commands`` (every CLI command as a typed function).
"""

#: pixels neighbouring tiles share in tiled inference (``--overlap``)
TILE_OVERLAP = 32
