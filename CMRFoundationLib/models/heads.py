"""Task heads on the ViT/8 encoder: a UNETR-style decoder, heatmaps, a linear classifier.

Conventions: images are [batch, channels, rows, cols]; landmark points are (row, col)
pixel coordinates, where pixel (r, c) has its centre at (r, c) (so a point at (0, 0)
is the centre of the top-left pixel). Missing landmarks are NaN.

The dense heads follow UNETR: skip features are taken from four depths of the encoder
(a quarter, half, three quarters and all of its blocks), brought from the 1/8 token grid
back to 1/2, 1/4 and 1/8 resolution by transposed convolutions, and merged in a
convolutional decoder that also sees the raw image at full resolution.

Normalisation is GroupNorm rather than BatchNorm or InstanceNorm: like InstanceNorm it
does not depend on the batch (finetuning batches are small), and unlike InstanceNorm it
stays defined on the tiny 1/8 maps of small crops (a 1x1 map has no spatial statistics
but still has a group of channels).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .vit import EncoderOutput

# The token grid of the encoder is at 1/8 of the image: the decoder's layout assumes it.
PATCH_SIZE = 8
_NORM_GROUPS = 8
# Decoder channels at full, 1/2, 1/4 and 1/8 resolution.
DECODER_FEATURES = (32, 64, 128, 256)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(_NORM_GROUPS, channels), channels)


class ConvBlock(nn.Module):
    """Two 3x3 convolutions, each with GroupNorm and LeakyReLU, around a residual path."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm1 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = _norm(out_channels)
        self.act = nn.LeakyReLU(0.01)
        if in_channels == out_channels:
            self.skip: nn.Module = nn.Identity()
        else:
            self.skip = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), _norm(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return self.act(y + self.skip(x))


def _up(in_channels: int, out_channels: int) -> nn.ConvTranspose2d:
    """Doubles the resolution (learned, as in UNETR)."""
    return nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2, bias=False)


class TokenUpsampler(nn.Sequential):
    """Tokens at 1/8 resolution -> feature map ``2**steps`` times larger.

    Each step is a transposed convolution followed by a conv block; with ``steps=0`` it
    is a single conv block at the token resolution.
    """

    def __init__(self, in_channels: int, out_channels: int, steps: int) -> None:
        if steps == 0:
            super().__init__(ConvBlock(in_channels, out_channels))
            return
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(steps):
            layers += [_up(channels, out_channels), ConvBlock(out_channels, out_channels)]
            channels = out_channels
        super().__init__(*layers)


class UNETRDecoder2D(nn.Module):
    """UNETR-style 2D decoder for the tokens of a patch-8 ViT.

    ``forward(image [B, in_channels, H, W], encoder_output) -> [B, out_channels, H, W]``
    (raw logits / heatmap values) for any H, W that are multiples of 8.
    """

    def __init__(
        self,
        encoder_dim: int,
        encoder_depth: int,
        out_channels: int,
        in_channels: int = 3,
        features: tuple[int, int, int, int] = DECODER_FEATURES,
    ) -> None:
        super().__init__()
        if encoder_depth < 4:
            raise ValueError(f"the UNETR decoder needs an encoder of at least 4 blocks, got depth {encoder_depth}")
        if len(features) != 4:
            raise ValueError(f"features must have 4 entries (full, 1/2, 1/4, 1/8 resolution), got {features!r}")
        self.encoder_dim = encoder_dim
        self.encoder_depth = encoder_depth
        self.out_channels = out_channels
        self.in_channels = in_channels
        self.features = tuple(int(f) for f in features)
        d = encoder_depth
        # 0-based block indices of the skips at depths d/4, d/2, 3d/4 and d.
        self.skip_blocks = (d // 4 - 1, d // 2 - 1, 3 * d // 4 - 1, d - 1)
        f0, f1, f2, f3 = self.features

        self.enc0 = ConvBlock(in_channels, f0)  # raw image, full resolution
        self.enc1 = TokenUpsampler(encoder_dim, f1, steps=2)  # 1/2
        self.enc2 = TokenUpsampler(encoder_dim, f2, steps=1)  # 1/4
        self.enc3 = TokenUpsampler(encoder_dim, f3, steps=0)  # 1/8
        self.bottleneck = TokenUpsampler(encoder_dim, f3, steps=0)  # 1/8, last block

        self.dec3 = ConvBlock(2 * f3, f3)
        self.up3 = _up(f3, f2)
        self.dec2 = ConvBlock(2 * f2, f2)
        self.up2 = _up(f2, f1)
        self.dec1 = ConvBlock(2 * f1, f1)
        self.up1 = _up(f1, f0)
        self.dec0 = ConvBlock(2 * f0, f0)
        self.out = nn.Conv2d(f0, out_channels, 1)

    def forward(self, image: torch.Tensor, encoder_output: EncoderOutput) -> torch.Tensor:
        if image.ndim != 4 or image.shape[1] != self.in_channels:
            raise ValueError(f"expected an image [B, {self.in_channels}, H, W], got shape {tuple(image.shape)}")
        rows, cols = image.shape[-2:]
        if rows % PATCH_SIZE or cols % PATCH_SIZE:
            raise ValueError(f"image size {rows}x{cols} is not a multiple of {PATCH_SIZE}")
        if tuple(encoder_output.grid) != (rows // PATCH_SIZE, cols // PATCH_SIZE):
            raise ValueError(
                f"token grid {tuple(encoder_output.grid)} does not match a {rows}x{cols} image at patch size {PATCH_SIZE}"
            )
        if len(encoder_output.blocks) != self.encoder_depth:
            raise ValueError(
                f"decoder built for {self.encoder_depth} encoder blocks, got {len(encoder_output.blocks)}"
            )
        skips = [encoder_output.patch_map(i) for i in self.skip_blocks]
        enc0 = self.enc0(image)
        enc1 = self.enc1(skips[0])
        enc2 = self.enc2(skips[1])
        enc3 = self.enc3(skips[2])
        x = self.bottleneck(skips[3])
        x = self.up3(self.dec3(torch.cat([x, enc3], dim=1)))
        x = self.up2(self.dec2(torch.cat([x, enc2], dim=1)))
        x = self.up1(self.dec1(torch.cat([x, enc1], dim=1)))
        return self.out(self.dec0(torch.cat([x, enc0], dim=1)))


class HeatmapHead(UNETRDecoder2D):
    """The UNETR decoder with one output channel per landmark: Gaussian heatmaps.

    Trained against ``gaussian_heatmaps`` targets (peak 1); read with ``heatmap_peaks``.
    """

    def __init__(
        self,
        encoder_dim: int,
        encoder_depth: int,
        n_landmarks: int,
        in_channels: int = 3,
        features: tuple[int, int, int, int] = DECODER_FEATURES,
    ) -> None:
        super().__init__(encoder_dim, encoder_depth, n_landmarks, in_channels, features)

    @property
    def n_landmarks(self) -> int:
        return self.out_channels


def gaussian_heatmaps(
    points: torch.Tensor, shape: tuple[int, int], sigma_px: float
) -> torch.Tensor:
    """Target heatmaps: a Gaussian of peak 1 at each point.

    ``points`` [B, K, 2] are (row, col) pixel coordinates (sub-pixel allowed); a point
    with a NaN coordinate is absent and gets an all-zero map. Returns [B, K, H, W].
    """
    points = torch.as_tensor(points)
    if not points.is_floating_point():
        points = points.float()
    if points.ndim != 3 or points.shape[-1] != 2:
        raise ValueError(f"points must be [batch, landmarks, 2] (row, col), got shape {tuple(points.shape)}")
    if not sigma_px > 0:
        raise ValueError(f"sigma_px must be positive, got {sigma_px}")
    rows, cols = (int(s) for s in shape)
    r = torch.arange(rows, dtype=points.dtype, device=points.device).view(1, 1, rows, 1)
    c = torch.arange(cols, dtype=points.dtype, device=points.device).view(1, 1, 1, cols)
    present = torch.isfinite(points).all(dim=-1)
    centres = torch.where(present[..., None], points, torch.zeros_like(points))
    d2 = (r - centres[..., 0, None, None]) ** 2 + (c - centres[..., 1, None, None]) ** 2
    heat = torch.exp(-d2 / (2.0 * sigma_px**2))
    return heat * present[..., None, None].to(heat.dtype)


# Values below this are treated as zero when taking logarithms of a heatmap.
_LOG_FLOOR = 1e-8


def _parabola_vertex(before: torch.Tensor, centre: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Offset in (-0.5, 0.5) of the vertex of the parabola through (-1, before), (0, centre), (1, after).

    Zero where the three values are not a strict local maximum (flat or clipped).
    """
    curvature = before - 2.0 * centre + after
    concave = curvature < 0
    safe = torch.where(concave, curvature, -torch.ones_like(curvature))
    return torch.where(concave, 0.5 * (before - after) / safe, torch.zeros_like(curvature))


def heatmap_peaks(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The peak of each heatmap, to sub-pixel precision.

    ``heatmaps`` [B, K, H, W] -> (points [B, K, 2] as float (row, col), confidence [B, K]).
    The peak is the arg-max refined by a parabola fitted, along rows and along columns,
    to the logarithm of the heatmap at the arg-max and its two neighbours: exact for a
    Gaussian, whose logarithm is a parabola. At the image border the arg-max is kept
    along that axis. ``confidence`` is the heatmap value at the arg-max (targets peak at 1).
    """
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be [batch, landmarks, H, W], got shape {tuple(heatmaps.shape)}")
    b, k, rows, cols = heatmaps.shape
    flat = heatmaps.detach().float().reshape(b, k, rows * cols)
    confidence, index = flat.max(dim=-1)
    row, col = index // cols, index % cols
    log_flat = flat.clamp_min(_LOG_FLOOR).log()

    def value_at(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return log_flat.gather(-1, (r * cols + c).unsqueeze(-1)).squeeze(-1)

    centre = value_at(row, col)
    row_offset = _parabola_vertex(value_at((row - 1).clamp_min(0), col), centre, value_at((row + 1).clamp_max(rows - 1), col))
    col_offset = _parabola_vertex(value_at(row, (col - 1).clamp_min(0)), centre, value_at(row, (col + 1).clamp_max(cols - 1)))
    row_offset = torch.where((row > 0) & (row < rows - 1), row_offset, torch.zeros_like(row_offset))
    col_offset = torch.where((col > 0) & (col < cols - 1), col_offset, torch.zeros_like(col_offset))
    points = torch.stack([row.float() + row_offset, col.float() + col_offset], dim=-1)
    return points, confidence.to(heatmaps.dtype)


class LinearClassifierHead(nn.Module):
    """DINO's linear evaluation head.

    Features: the class tokens of the last ``n_last_blocks`` blocks and the mean patch
    token of the last block, concatenated ((n_last_blocks + 1) * dim; 1920 for ViT-S),
    then one Linear layer to the class logits.
    """

    def __init__(self, encoder_dim: int, n_classes: int, n_last_blocks: int = 4) -> None:
        super().__init__()
        if n_last_blocks < 1:
            raise ValueError(f"n_last_blocks must be at least 1, got {n_last_blocks}")
        self.encoder_dim = encoder_dim
        self.n_classes = n_classes
        self.n_last_blocks = n_last_blocks
        self.linear = nn.Linear(self.feature_dim, n_classes)
        nn.init.normal_(self.linear.weight, std=0.01)  # as DINO's linear classifier
        nn.init.zeros_(self.linear.bias)

    @property
    def feature_dim(self) -> int:
        return (self.n_last_blocks + 1) * self.encoder_dim

    def features(self, encoder_output: EncoderOutput) -> torch.Tensor:
        """The concatenated features [B, feature_dim] that the linear layer reads."""
        if len(encoder_output.blocks) < self.n_last_blocks:
            raise ValueError(
                f"the classifier reads the last {self.n_last_blocks} blocks, "
                f"but the encoder gave {len(encoder_output.blocks)}"
            )
        parts = [encoder_output.cls_token(i) for i in range(-self.n_last_blocks, 0)]
        parts.append(encoder_output.patch_tokens(-1).mean(dim=1))
        return torch.cat(parts, dim=-1)

    def forward(self, encoder_output: EncoderOutput) -> torch.Tensor:
        return self.linear(self.features(encoder_output))
