"""Training augmentation: scale, rotation/translation and MR intensity changes.

Scale is augmented before pre-processing by perturbing the pixel spacing, which is also
how the unknown spacing of ACDC and EMIDEC is absorbed (the data sets dropped it; we
assume 1.5 mm and let the network see +-20 %). Rotation and translation act on the
pre-processed 1 mm grid, on the image and its target together (label maps by nearest
neighbour, landmark coordinates exactly). No flips: a mirrored heart swaps the anterior
and inferior RV insertion points and does not occur in scanner images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    scale: float = 0.2  # spacing multiplied by U(1 - scale, 1 + scale)
    rotation_deg: float = 15.0
    translation_px: float = 10.0
    gamma: float = 0.3  # intensity gamma in exp(U(-g, g))
    contrast: float = 0.15
    noise_sd: float = 0.03  # Gaussian noise on the [-1, 1] image
    probability: float = 0.8  # chance of each geometric / intensity step

    @classmethod
    def none(cls) -> "AugmentConfig":
        return cls(scale=0.0, rotation_deg=0.0, translation_px=0.0, gamma=0.0, contrast=0.0, noise_sd=0.0, probability=0.0)


def random_spacing(spacing: tuple[float, float], config: AugmentConfig, rng: np.random.Generator) -> tuple[float, float]:
    """The spacing to pre-process with: an isotropic random zoom of the true one."""
    if config.scale <= 0 or rng.random() >= config.probability:
        return spacing
    factor = rng.uniform(1.0 - config.scale, 1.0 + config.scale)
    return (spacing[0] * factor, spacing[1] * factor)


def random_rigid(
    image: torch.Tensor,
    labels: torch.Tensor | None,
    points: torch.Tensor | None,
    config: AugmentConfig,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Rotate and translate a square [C, S, S] image with its label map [S, S] and points [K, 2] (row, col)."""
    if (config.rotation_deg <= 0 and config.translation_px <= 0) or rng.random() >= config.probability:
        return image, labels, points
    size = image.shape[-1]
    angle = math.radians(rng.uniform(-config.rotation_deg, config.rotation_deg))
    shift = rng.uniform(-config.translation_px, config.translation_px, size=2)  # (row, col) pixels
    cos, sin = math.cos(angle), math.sin(angle)
    # Output pixel p maps to input pixel A (p - c) + c + t, in (row, col).
    rotation = np.array([[cos, -sin], [sin, cos]])
    swap = np.array([[0.0, 1.0], [1.0, 0.0]])  # (row, col) <-> (x, y) as grid_sample wants
    theta = np.zeros((2, 3))
    theta[:, :2] = swap @ rotation @ swap
    theta[:, 2] = swap @ shift * 2.0 / (size - 1)  # align_corners=True: pixel -> [-1, 1]
    grid = F.affine_grid(torch.as_tensor(theta, dtype=image.dtype)[None], [1, 1, size, size], align_corners=True)
    # Outside the field of view is background: -1 after normalisation.
    image = F.grid_sample(image[None] + 1.0, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0] - 1.0
    if labels is not None:
        moved = F.grid_sample(labels[None, None].float(), grid.to(torch.float32), mode="nearest", align_corners=True)
        labels = moved[0, 0].round().to(labels.dtype)
    if points is not None:
        centre = (size - 1) / 2.0
        inverse = torch.as_tensor(rotation.T, dtype=points.dtype)
        offset = points - centre - torch.as_tensor(shift, dtype=points.dtype)
        points = offset @ inverse.T + centre
    return image, labels, points


def random_intensity(image: torch.Tensor, config: AugmentConfig, rng: np.random.Generator) -> torch.Tensor:
    """Gamma, contrast and noise on a [-1, 1] image, the changes between scanners and coils."""
    if rng.random() >= config.probability:
        return image
    unit = ((image + 1.0) / 2.0).clamp(0.0, 1.0)
    if config.gamma > 0:
        unit = unit ** math.exp(rng.uniform(-config.gamma, config.gamma))
    out = unit * 2.0 - 1.0
    if config.contrast > 0:
        out = out * rng.uniform(1.0 - config.contrast, 1.0 + config.contrast)
    if config.noise_sd > 0:
        generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
        out = out + torch.randn(out.shape, generator=generator, dtype=out.dtype) * rng.uniform(0, config.noise_sd)
    return out.clamp(-1.0, 1.0)
