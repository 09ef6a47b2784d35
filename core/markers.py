"""The two pluggy markers of the project `deblurstack`, defined once.

Plugin authors import ``hookimpl`` from the package root::

    from deblurstack import hookimpl
"""

import pluggy

PROJECT_NAME = "deblurstack"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


__all__ = ["PROJECT_NAME", "hookimpl", "hookspec"]
