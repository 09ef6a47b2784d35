"""``python -m deblurstack`` runs the CLI (this is also what torchrun launches)."""

from deblurstack.cli import run

run()
