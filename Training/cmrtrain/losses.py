"""The loss of each task family, chosen by the task's ``loss`` entry in the registry."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from torch import nn

from CMRFoundationLib.models.heads import gaussian_heatmaps
from CMRFoundationLib.tasks import TaskSpec


class HeatmapLoss(nn.Module):
    """MSE between predicted heatmaps and Gaussians at the target points.

    Absent points (NaN) contribute nothing. The squared error is summed over pixels and
    averaged over present points, so that a 3 mm Gaussian on a 224x224 grid is not
    drowned by the background (a plain pixel mean is ~1e-4 for an all-zero output).
    Pixels under the Gaussian weigh more (1 + foreground_weight * target): otherwise an
    all-zero output is a deep early minimum and the peaks take long to appear.
    """

    def __init__(self, sigma_px: float, foreground_weight: float = 10.0) -> None:
        super().__init__()
        self.sigma_px = sigma_px
        self.foreground_weight = foreground_weight

    def forward(self, heatmaps: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        target = gaussian_heatmaps(points, heatmaps.shape[-2:], self.sigma_px).to(heatmaps)
        present = ~torch.isnan(points).any(dim=-1)  # [B, K]
        weight = 1.0 + self.foreground_weight * target
        per_point = (weight * (heatmaps - target) ** 2).sum(dim=(-2, -1))
        return (per_point * present).sum() / present.sum().clamp(min=1) / (self.sigma_px**2)


class SegmentationLoss(nn.Module):
    """Soft Dice + cross-entropy, as in the method."""

    def __init__(self) -> None:
        super().__init__()
        self.dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.dice_ce(logits, labels[:, None].long())


class ClassificationLoss(nn.Module):
    def forward(self, logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, classes.long())


def loss_for(task: TaskSpec, spacing_mm: float) -> nn.Module:
    """The loss module of ``task``; heatmap widths are in mm and become pixels at ``spacing_mm``."""
    if task.loss == "dice_ce":
        return SegmentationLoss()
    if task.loss == "heatmap_mse":
        return HeatmapLoss(task.heatmap_sigma_mm / spacing_mm)
    if task.loss == "ce":
        return ClassificationLoss()
    raise ValueError(f"task {task.name}: unknown loss {task.loss!r}")
