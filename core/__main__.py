"""``python -m deblurstack`` runs the CLI (this is also what torchrun launches)."""

import os
import sys

from deblurstack.cli import main

code = main()
if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    # A torchrun worker skips the interpreter's finalization: there, gloo's threads (left after the process group
    # is destroyed) could abort a rank that had finished well ("terminate called without an active exception").
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
raise SystemExit(code)
