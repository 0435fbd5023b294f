"""DINO self-distillation without labels (Caron et al., "Emerging Properties in
Self-Supervised Vision Transformers", ICCV 2021), adapted to grey-level MR.

A student network sees several crops of an image (two large "global" crops and a few
small "local" ones) and learns to predict, for every crop, the output distribution the
teacher gives for the *other* global crops. The teacher is an exponential moving average
of the student and gets only the global crops. Collapse is avoided by centring (the
teacher's outputs minus a running mean) and sharpening (a low teacher temperature).

The pieces here: the projection head, the multi-crop augmentation, the loss, the
schedules, the EMA update and the optimiser parameter groups. ``pretrain_dino.py`` wires
them into the training loop.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .augment import gaussian_blur

# --- model -------------------------------------------------------------------------------


class WeightNormLinear(nn.Module):
    """A bias-free linear layer whose rows are unit vectors scaled by a gain.

    With the gain frozen at 1 (``train_gain=False``, DINO's ``norm_last_layer``) the
    outputs are cosine similarities between the l2-normalised bottleneck feature and
    ``out_dim`` learned prototypes, which keeps training stable.
    """

    def __init__(self, in_dim: int, out_dim: int, train_gain: bool = False) -> None:
        super().__init__()
        self.direction = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.trunc_normal_(self.direction, std=0.02)
        self.gain = nn.Parameter(torch.ones(out_dim), requires_grad=train_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = F.normalize(self.direction, dim=1) * self.gain[:, None]
        return F.linear(x, weight)


class DINOHead(nn.Module):
    """Projection head: 3-layer MLP -> l2-normalised bottleneck -> weight-normalised prototypes."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, train_gain=not norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1)
        return self.last_layer(x)


class MultiCropWrapper(nn.Module):
    """Encoder + head over a list of crops of (possibly) different sizes.

    Consecutive crops of the same resolution go through the encoder as one batch (one
    pass for the global crops, one for the local ones); the class token of the last
    block of each crop goes to the head. Returns [n_crops * batch, out_dim], crop-major
    (all images' crop 0, then all images' crop 1, ...), matching ``DINOLoss``.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, crops: list[torch.Tensor]) -> torch.Tensor:
        features = []
        start = 0
        while start < len(crops):
            end = start + 1
            while end < len(crops) and crops[end].shape[-2:] == crops[start].shape[-2:]:
                end += 1
            features.append(self.encoder(torch.cat(crops[start:end])).cls_token(-1))
            start = end
        return self.head(torch.cat(features))


# --- augmentation ------------------------------------------------------------------------


class MultiCropAugment:
    """DINO's multi-crop views of one pre-processed MR image (1 mm grid, values in [-1, 1]).

    Every crop is a random resized crop (area fraction from ``global_scale`` or
    ``local_scale`` of the image, aspect ratio 3/4..4/3) with a random small rotation and
    optional horizontal flip, done in one bilinear resampling; then MR-appropriate
    intensity changes (contrast/brightness, gamma, Gaussian blur, noise) instead of
    ImageNet's colour jitter and solarisation. As in DINO the two global views are
    augmented asymmetrically (view 1 always blurred, view 2 rarely blurred but sometimes
    noisy). The grey image is repeated to 3 channels at the very end.

    Call with a tensor [H, W] or [1, H, W]; returns ``2 + n_local`` tensors [3, size, size],
    the global crops first. Uses torch's global RNG, which DataLoader seeds per worker.
    """

    # Per view kind: (probability of blur, probability of noise); DINO's asymmetry.
    _BLUR_NOISE = {"global1": (1.0, 0.0), "global2": (0.1, 0.3), "local": (0.5, 0.1)}

    def __init__(
        self,
        global_size: int = 224,
        local_size: int = 96,
        n_local: int = 10,
        global_scale: tuple[float, float] = (0.4, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.4),
        rotation_deg: float = 15.0,
        flip_p: float = 0.5,
        contrast: float = 0.3,
        brightness: float = 0.1,
        gamma: float = 0.4,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        noise_sd: tuple[float, float] = (0.01, 0.08),
    ) -> None:
        for name, scale in (("global_scale", global_scale), ("local_scale", local_scale)):
            if not 0.0 < scale[0] <= scale[1] <= 1.0:
                raise ValueError(f"{name} must satisfy 0 < low <= high <= 1, got {scale}")
        if global_size <= 0 or local_size <= 0 or n_local < 0:
            raise ValueError(f"bad crop sizes: global {global_size}, local {local_size}, n_local {n_local}")
        self.global_size = global_size
        self.local_size = local_size
        self.n_local = n_local
        self.global_scale = tuple(global_scale)
        self.local_scale = tuple(local_scale)
        self.rotation_deg = rotation_deg
        self.flip_p = flip_p
        self.contrast = contrast
        self.brightness = brightness
        self.gamma = gamma
        self.blur_sigma = tuple(blur_sigma)
        self.noise_sd = tuple(noise_sd)

    @property
    def n_crops(self) -> int:
        return 2 + self.n_local

    def __call__(self, image: torch.Tensor) -> list[torch.Tensor]:
        if image.ndim == 2:
            image = image[None]
        if image.ndim != 3 or image.shape[0] != 1:
            raise ValueError(f"MultiCropAugment expects one grey image [H, W] or [1, H, W], got {tuple(image.shape)}")
        image = image.float()
        globals_ = self._crops(image, 2, self.global_size, self.global_scale)
        locals_ = self._crops(image, self.n_local, self.local_size, self.local_scale) if self.n_local else []
        kinds = ["global1", "global2"] + ["local"] * self.n_local
        views = []
        for crop, kind in zip([*globals_, *locals_], kinds):
            views.append(self._intensity(crop, *self._BLUR_NOISE[kind]).expand(3, -1, -1))
        return views

    def _crops(self, image: torch.Tensor, n: int, size: int, scale: tuple[float, float]) -> list[torch.Tensor]:
        """``n`` random resized, rotated, maybe flipped crops [1, size, size], in one grid_sample."""
        _, height, width = image.shape
        thetas = torch.stack([self._crop_affine(height, width, scale) for _ in range(n)])
        grid = F.affine_grid(thetas, [n, 1, size, size], align_corners=False)
        # Sample (image + 1) with zero padding so that outside the image reads as -1 (background).
        crops = F.grid_sample((image + 1.0)[None].expand(n, -1, -1, -1), grid, mode="bilinear",
                              padding_mode="zeros", align_corners=False) - 1.0
        return list(crops)

    def _crop_affine(self, height: int, width: int, scale: tuple[float, float]) -> torch.Tensor:
        """The 2x3 affine (output -> input, normalised coordinates) of one random crop."""
        crop_w, crop_h = self._crop_size(height, width, scale)
        # Crop centre in continuous pixel coordinates (pixel i spans [i, i+1]); the unrotated box lies inside.
        cx = crop_w / 2 + _uniform(0.0, width - crop_w)
        cy = crop_h / 2 + _uniform(0.0, height - crop_h)
        angle = math.radians(_uniform(-self.rotation_deg, self.rotation_deg))
        cos, sin = math.cos(angle), math.sin(angle)
        flip = -1.0 if _uniform(0.0, 1.0) < self.flip_p else 1.0
        # input = centre + R @ diag(flip * crop_w / 2, crop_h / 2) @ output, then to [-1, 1] units.
        half_w, half_h = flip * crop_w / 2, crop_h / 2
        a = [[cos * half_w, -sin * half_h], [sin * half_w, cos * half_h]]
        return torch.tensor(
            [
                [2 * a[0][0] / width, 2 * a[0][1] / width, 2 * cx / width - 1],
                [2 * a[1][0] / height, 2 * a[1][1] / height, 2 * cy / height - 1],
            ],
            dtype=torch.float32,
        )

    @staticmethod
    def _crop_size(height: int, width: int, scale: tuple[float, float]) -> tuple[float, float]:
        """Crop width and height in pixels: area fraction from ``scale``, aspect ratio 3/4..4/3."""
        area = height * width
        for _ in range(10):
            target = area * _uniform(*scale)
            ratio = math.exp(_uniform(math.log(3 / 4), math.log(4 / 3)))
            w, h = math.sqrt(target * ratio), math.sqrt(target / ratio)
            if w <= width and h <= height:
                return w, h
        side = math.sqrt(area * scale[1])  # rare fallback: the largest square that fits
        return min(side, width), min(side, height)

    def _intensity(self, crop: torch.Tensor, blur_p: float, noise_p: float) -> torch.Tensor:
        """MR intensity changes on a [1, s, s] crop in [-1, 1]; the result is clipped to [-1, 1]."""
        if _uniform(0.0, 1.0) < 0.8:  # contrast and brightness around the crop's mean
            mean = crop.mean()
            factor = _uniform(1.0 - self.contrast, 1.0 + self.contrast)
            crop = (crop - mean) * factor + mean + _uniform(-self.brightness, self.brightness)
        if _uniform(0.0, 1.0) < 0.5:  # gamma on the [0, 1] version of the image
            unit = ((crop + 1.0) / 2.0).clamp(0.0, 1.0)
            crop = unit ** math.exp(_uniform(-self.gamma, self.gamma)) * 2.0 - 1.0
        if _uniform(0.0, 1.0) < blur_p:
            crop = gaussian_blur(crop, _uniform(*self.blur_sigma))
        if _uniform(0.0, 1.0) < noise_p:
            crop = crop + torch.randn_like(crop) * _uniform(*self.noise_sd)
        return crop.clamp(-1.0, 1.0)


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * torch.rand(()).item()


# --- loss ----------------------------------------------------------------------------------


class DINOLoss(nn.Module):
    """Cross-entropy between the centred, sharpened teacher and the student, over crop pairs.

    ``student_output`` is [n_crops * batch, out_dim] and ``teacher_output`` is
    [n_global * batch, out_dim], crop-major. Every teacher (global) view is compared with
    every student view except the same one. The teacher temperature rises linearly from
    ``warmup_teacher_temp`` to ``teacher_temp`` over ``warmup_epochs``. After each call the
    centre moves towards the batch mean of the teacher outputs (averaged over all DDP
    ranks) with momentum ``center_momentum``. The centre is a buffer, so it is saved in
    ``state_dict`` and restored on resume.
    """

    def __init__(
        self,
        out_dim: int,
        n_crops: int,
        warmup_teacher_temp: float = 0.04,
        teacher_temp: float = 0.07,
        warmup_epochs: int = 30,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        n_global: int = 2,
    ) -> None:
        super().__init__()
        if not 1 <= n_global <= n_crops:
            raise ValueError(f"n_global must be in 1..n_crops ({n_crops}), got {n_global}")
        self.n_crops = n_crops
        self.n_global = n_global
        self.warmup_teacher_temp = warmup_teacher_temp
        self.teacher_temp = teacher_temp
        self.warmup_epochs = warmup_epochs
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def teacher_temperature(self, epoch: int) -> float:
        if epoch >= self.warmup_epochs:
            return self.teacher_temp
        if self.warmup_epochs == 1:
            return self.warmup_teacher_temp
        fraction = epoch / (self.warmup_epochs - 1)
        return self.warmup_teacher_temp + fraction * (self.teacher_temp - self.warmup_teacher_temp)

    def forward(self, student_output: torch.Tensor, teacher_output: torch.Tensor, epoch: int) -> torch.Tensor:
        # Softmaxes over 65536 prototypes are done in float32 whatever the autocast dtype.
        student = (student_output.float() / self.student_temp).chunk(self.n_crops)
        temperature = self.teacher_temperature(epoch)
        teacher = F.softmax((teacher_output.float().detach() - self.center) / temperature, dim=-1).chunk(self.n_global)

        total = student_output.new_zeros((), dtype=torch.float32)
        pairs = 0
        for t_index, t in enumerate(teacher):
            for s_index, s in enumerate(student):
                if s_index == t_index:  # the same view: nothing to predict
                    continue
                total = total + torch.sum(-t * F.log_softmax(s, dim=-1), dim=-1).mean()
                pairs += 1
        self.update_center(teacher_output)
        return total / pairs

    @torch.no_grad()
    def update_center(self, teacher_output: torch.Tensor) -> None:
        batch_sum = teacher_output.float().sum(dim=0, keepdim=True)
        distributed.all_reduce_sum(batch_sum)
        batch_center = batch_sum / (teacher_output.shape[0] * distributed.world_size())
        self.center.mul_(self.center_momentum).add_(batch_center * (1.0 - self.center_momentum))


# --- schedules, EMA, optimisation -------------------------------------------------------------


def cosine_schedule(
    base: float,
    final: float,
    epochs: int,
    iters_per_epoch: int,
    warmup_epochs: int = 0,
    start_warmup: float = 0.0,
) -> np.ndarray:
    """A value per iteration: linear warm-up from ``start_warmup`` to ``base``, then cosine to ``final``."""
    total = epochs * iters_per_epoch
    warmup_iters = min(warmup_epochs * iters_per_epoch, total)
    warmup = np.linspace(start_warmup, base, warmup_iters, endpoint=False) if warmup_iters else np.zeros(0)
    steps = np.arange(total - warmup_iters)
    cosine = final + 0.5 * (base - final) * (1.0 + np.cos(np.pi * steps / max(len(steps), 1)))
    return np.concatenate([warmup, cosine])


@torch.no_grad()
def update_teacher(student: nn.Module, teacher: nn.Module, momentum: float) -> None:
    """EMA: teacher = momentum * teacher + (1 - momentum) * student, parameter by parameter."""
    student_params = [p.detach() for p in student.parameters()]
    teacher_params = list(teacher.parameters())
    if len(student_params) != len(teacher_params):
        raise ValueError("student and teacher have different parameter lists")
    torch._foreach_mul_(teacher_params, momentum)
    torch._foreach_add_(teacher_params, student_params, alpha=1.0 - momentum)


def param_groups(model: nn.Module) -> list[dict]:
    """Two AdamW groups: weights with decay, and biases/norms/position embedding/class token without.

    The schedule sets the weight decay of group 0 only.
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.endswith(("pos_embed", "cls_token")):
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def cancel_last_layer_gradients(model: nn.Module, epoch: int, freeze_epochs: int) -> None:
    """Drop the head's last-layer gradients during the first ``freeze_epochs`` epochs.

    The prototypes stay put while the rest of the network settles, which DINO found
    helps training start. A None gradient makes AdamW skip the parameter entirely.
    """
    if epoch >= freeze_epochs:
        return
    for name, param in model.named_parameters():
        if "last_layer" in name:
            param.grad = None
