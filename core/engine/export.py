"""Exporting a stack for deployment as ONNX, checked with onnxruntime.

The torch.export-based exporter comes first; where it cannot follow a model (some resizing code),
the TorchScript tracer takes over. Batch, height and width stay dynamic either way, so the
internal padding of a backbone works for any size, and every export is checked on an odd-sized
input that was not used to export it. (No torch.export ``.pt2`` program is offered: slicing padded
maps back to a dynamic width makes torch.export specialise on the padding, where ONNX stays general.)
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deblurstack.errors import DeblurstackError, one_line

#: the size traced at export, and a different odd size the result is checked on
EXAMPLE_SIZE, CHECK_SIZE = (67, 93), (61, 87)


class ExportError(DeblurstackError):
    """The stack could not be exported, or the export disagrees with PyTorch."""


def export_onnx(stack: nn.Module, path: str | Path, tolerance: float = 1e-4) -> tuple[str, float]:
    """Export ``stack`` (image in, image out) to ONNX at ``path``.

    Returns the route taken (``torch.export``, or a ``TorchScript trace`` where torch.export cannot
    follow the model) and the max abs difference to PyTorch on a ``CHECK_SIZE`` input; raises
    :class:`ExportError` when that exceeds ``tolerance``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stack = stack.eval()
    multiple = max(getattr(getattr(stack, "backbone", stack), "pad_multiple", 1), 1)
    example = torch.rand(2, 3, *EXAMPLE_SIZE)  # not 1: torch.export specialises dimensions of size 1
    shapes = {
        "image": {
            0: torch.export.Dim("batch", min=1, max=64),
            2: torch.export.Dim("height", min=2 * multiple, max=16384),
            3: torch.export.Dim("width", min=2 * multiple, max=16384),
        }
    }
    try:
        program = torch.onnx.export(
            stack,
            (example,),
            dynamo=True,
            input_names=["image"],
            output_names=["output"],
            dynamic_shapes=shapes,
            verbose=False,
        )
        program.save(str(path))
        route = "torch.export"
    except Exception as first:  # torch.export cannot follow some resizing code: trace it with TorchScript instead
        axes = {name: {0: "batch", 2: "height", 3: "width"} for name in ("image", "output")}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer and deprecation warnings; the check below decides
                torch.onnx.export(
                    stack,
                    (example,),
                    str(path),
                    dynamo=False,
                    input_names=["image"],
                    output_names=["output"],
                    dynamic_axes=axes,
                    opset_version=17,
                )
        except Exception as error:
            raise ExportError(
                f"ONNX export failed: torch.export: {_first_words(first)}; TorchScript: {_first_words(error)}"
            ) from error
        route = "TorchScript trace"
    check = torch.rand(2, 3, *CHECK_SIZE, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = stack(check).numpy()
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    difference = float(np.abs(session.run(None, {"image": check.numpy()})[0] - expected).max())
    if not difference <= tolerance:
        raise ExportError(
            f"{path}: the exported model differs from PyTorch by {difference:.3g} "
            f"(tolerance {tolerance}) on a 2x3x{CHECK_SIZE[0]}x{CHECK_SIZE[1]} input"
        )
    return route, difference


def _first_words(error: BaseException) -> str:
    return f"{type(error).__name__}: {one_line(error, 200)}"


__all__ = [
    "CHECK_SIZE",
    "ExportError",
    "export_onnx",
]
