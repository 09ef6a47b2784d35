"""A loss on image gradients, which sharpens edges that a pixel loss leaves soft."""

from __future__ import annotations

from torch import Tensor

from deblurstack import Loss


class GradientL1(Loss):
    """Mean absolute difference of horizontal and vertical finite differences."""

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        def dx(image: Tensor) -> Tensor:
            return image[..., :, 1:] - image[..., :, :-1]

        def dy(image: Tensor) -> Tensor:
            return image[..., 1:, :] - image[..., :-1, :]

        return (dx(prediction) - dx(target)).abs().mean() + (dy(prediction) - dy(target)).abs().mean()
