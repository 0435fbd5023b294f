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


@dataclass(frozen=True)
class AppearanceConfig:
    """What differs between scanners, vendors and protocols beyond gamma and contrast.

    Each step runs with its own probability on the [-1, 1] model-grid image: a smooth
    multiplicative bias field (coil sensitivity), blur and a lower acquired resolution
    (reconstruction, matrix size), through-plane partial volume (a thicker slice averages
    anatomy that shrinks or grows along the long axis: the slice blended with a slightly
    zoomed copy of itself), and for segmentation a label-driven re-rendering (SynthSeg-
    style: every labelled structure and the background get new random intensities, so
    the model cannot rely on one scanner's contrast between blood, muscle and fat).
    """

    bias_p: float = 0.5
    bias_strength: float = 0.4  # log-amplitude of the field
    blur_p: float = 0.3
    blur_sigma_px: float = 1.2
    low_resolution_p: float = 0.3
    low_resolution_factor: float = 2.0  # acquired pixels up to this many times larger
    through_plane_p: float = 0.3
    through_plane_zoom: float = 0.08  # the neighbouring anatomy is up to 8 % larger / smaller
    label_render_p: float = 0.3

    @classmethod
    def none(cls) -> "AppearanceConfig":
        return cls(bias_p=0.0, blur_p=0.0, low_resolution_p=0.0, through_plane_p=0.0, label_render_p=0.0)


def random_appearance(image: torch.Tensor, labels: torch.Tensor | None, config: AppearanceConfig,
                      rng: np.random.Generator) -> torch.Tensor:
    """Scanner-to-scanner appearance changes on a [C, S, S] image in [-1, 1] (see AppearanceConfig)."""
    if labels is not None and rng.random() < config.label_render_p:
        image = render_from_labels(image, labels, rng)
    if rng.random() < config.through_plane_p:
        zoom = 1.0 + rng.uniform(-config.through_plane_zoom, config.through_plane_zoom)
        weight = rng.uniform(0.2, 0.5)
        image = (1.0 - weight) * image + weight * _zoom(image, zoom)
    if rng.random() < config.low_resolution_p:
        factor = rng.uniform(1.0, config.low_resolution_factor)
        size = image.shape[-1]
        small = F.interpolate(image[None], size=max(8, round(size / factor)), mode="area")
        image = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)[0]
    if rng.random() < config.blur_p:
        image = gaussian_blur(image, rng.uniform(0.3, config.blur_sigma_px))
    if rng.random() < config.bias_p:
        image = ((image + 1.0) * bias_field(image.shape[-1], config.bias_strength, rng).to(image.dtype) - 1.0)
    return image.clamp(-1.0, 1.0)


def render_from_labels(image: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Each labelled structure gets a new random mean intensity and contrast, keeping its
    texture; the background keeps its anatomy under a milder change; edges are softened
    by a little blur so that no label boundary is sharper than in a real image."""
    out = image.clone()
    for k in torch.unique(labels).tolist():
        region = labels == k
        values = image[:, region]
        mean = values.mean()
        if k == 0:
            new_mean, scale = mean + rng.uniform(-0.3, 0.3), rng.uniform(0.7, 1.3)
        else:
            new_mean, scale = rng.uniform(-0.8, 0.9), rng.uniform(0.4, 1.6)
        out[:, region] = new_mean + scale * (values - mean)
    return gaussian_blur(out, rng.uniform(0.5, 1.0)).clamp(-1.0, 1.0)


def bias_field(size: int, strength: float, rng: np.random.Generator) -> torch.Tensor:
    """A smooth positive field [size, size]: exp of a 4x4 random grid upsampled bicubically."""
    coarse = torch.as_tensor(rng.normal(0.0, 1.0, size=(1, 1, 4, 4)), dtype=torch.float32)
    smooth = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)[0, 0]
    return torch.exp(strength * smooth / max(1e-6, float(smooth.abs().max())))


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [C, H, W] (edges replicated)."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = F.pad(image[:, None], (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    return x[:, 0]


def _zoom(image: torch.Tensor, factor: float) -> torch.Tensor:
    """The image magnified by ``factor`` about its centre (background -1 outside)."""
    theta = torch.tensor([[[1.0 / factor, 0.0, 0.0], [0.0, 1.0 / factor, 0.0]]], dtype=image.dtype)
    grid = F.affine_grid(theta, [1, 1, *image.shape[-2:]], align_corners=False)
    return F.grid_sample(image[None] + 1.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0] - 1.0
