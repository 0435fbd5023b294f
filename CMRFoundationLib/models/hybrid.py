"""The CPU-sized foundation encoder: convolutions at full resolution, a transformer on coarse tokens.

A plain ViT/8 spends all its compute on 8 mm tokens, wider than a thin myocardium, and
is too slow to train well on a CPU. The hybrid (as CineMA's encoder) keeps what
convolutions do cheaply and well, edges at full resolution, in four convolutional
stages (full, 1/2, 1/4, 1/8), and gives the transformer only the 1/16 token grid, where
global context (which chamber is which, the view) is decided. Its output carries both:
the token blocks as ``EncoderOutput`` (so the linear classifier reads class tokens as
it does from the ViT) and the convolutional feature maps, which ``UNetDecoder2D`` takes
as full-resolution skips.

ViT-S/8 stays the configuration for a GPU; the manifest's architecture names which one a
weights file holds, and both load through ``build_from_architecture``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .heads import ConvBlock, _norm, _up
from .vit import EncoderOutput, TokenEncoder


@dataclass(frozen=True)
class HybridConfig:
    # Channels of the convolutional stages at full, 1/2, 1/4 and 1/8 resolution.
    stage_channels: tuple[int, int, int, int] = (16, 32, 64, 128)
    dim: int = 192  # transformer width on the 1/16 tokens
    depth: int = 4
    heads: int = 6
    mlp_ratio: float = 4.0
    in_channels: int = 3
    image_size: int = 176  # position embeddings are learned for this size, interpolated for others
    drop_path: float = 0.0
    family: str = "hybrid"  # tells a hybrid config from a ViT config in a manifest

    def __post_init__(self) -> None:
        object.__setattr__(self, "stage_channels", tuple(int(c) for c in self.stage_channels))
        if len(self.stage_channels) != 4:
            raise ValueError(f"stage_channels needs 4 entries (full, 1/2, 1/4, 1/8), got {self.stage_channels!r}")
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")
        if self.image_size % TOKEN_STRIDE:
            raise ValueError(f"image_size {self.image_size} is not a multiple of {TOKEN_STRIDE}")

    def to_dict(self) -> dict:
        values = asdict(self)
        values["stage_channels"] = list(self.stage_channels)
        return values


# The transformer's tokens are 16x16 pixels (four halvings: three stages and the token merge).
TOKEN_STRIDE = 16

HYBRID_CONFIGS = {
    # The CPU configuration the carried weights use (about 2.5M parameters).
    "hybrid_small": HybridConfig(),
    # For tests: the same layout, a fraction of the width.
    "hybrid_nano": HybridConfig(stage_channels=(8, 8, 16, 32), dim=48, depth=2, heads=3, image_size=64),
}


def is_hybrid_config(config: object) -> bool:
    if isinstance(config, HybridConfig):
        return True
    if isinstance(config, str):
        return config in HYBRID_CONFIGS
    return isinstance(config, dict) and config.get("family") == "hybrid"


def hybrid_config(name_or_config: str | HybridConfig | dict, **overrides) -> HybridConfig:
    """A HybridConfig from a preset name, a dict (e.g. from a manifest) or a config."""
    if isinstance(name_or_config, HybridConfig):
        base = asdict(name_or_config)
    elif isinstance(name_or_config, dict):
        base = dict(name_or_config)
    else:
        try:
            base = asdict(HYBRID_CONFIGS[name_or_config])
        except KeyError:
            raise KeyError(f"unknown hybrid encoder {name_or_config!r}; known: {', '.join(HYBRID_CONFIGS)}") from None
    return HybridConfig(**{**base, **overrides})


@dataclass
class HybridOutput(EncoderOutput):
    """``EncoderOutput`` of the token blocks plus the convolutional stages' feature maps
    (full, 1/2, 1/4 and 1/8 resolution), the decoder's skips."""

    stages: list[torch.Tensor] = field(default_factory=list)


class HybridEncoder(TokenEncoder):
    def __init__(self, config: HybridConfig | str | dict = "hybrid_small") -> None:
        super().__init__()
        self.config = config = hybrid_config(config)
        c0, c1, c2, c3 = config.stage_channels
        self.stem = ConvBlock(config.in_channels, c0)
        self.down1 = _downsample(c0, c1)
        self.stage1 = ConvBlock(c1, c1)
        self.down2 = _downsample(c1, c2)
        self.stage2 = ConvBlock(c2, c2)
        self.down3 = _downsample(c2, c3)
        self.stage3 = ConvBlock(c3, c3)
        self.token_embed = nn.Conv2d(c3, config.dim, kernel_size=2, stride=2)  # 1/8 -> 1/16 tokens
        self._build_transformer((config.image_size // TOKEN_STRIDE) ** 2)

    def forward(self, x: torch.Tensor) -> HybridOutput:
        _, _, h, w = x.shape
        if h % TOKEN_STRIDE or w % TOKEN_STRIDE:
            raise ValueError(f"image size {h}x{w} is not a multiple of {TOKEN_STRIDE}")
        s0 = self.stem(x)
        s1 = self.stage1(self.down1(s0))
        s2 = self.stage2(self.down2(s1))
        s3 = self.stage3(self.down3(s2))
        grid = (h // TOKEN_STRIDE, w // TOKEN_STRIDE)
        blocks = self._encode(self.token_embed(s3).flatten(2).transpose(1, 2), grid)
        return HybridOutput(blocks, grid, [s0, s1, s2, s3])


def _downsample(in_channels: int, out_channels: int) -> nn.Sequential:
    """Halves the resolution with a strided 3x3 convolution."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False), _norm(out_channels), nn.LeakyReLU(0.01)
    )


class UNetDecoder2D(nn.Module):
    """U-Net decoder on the hybrid encoder: the 1/16 tokens upsampled stage by stage, each
    merged with the encoder's convolutional features of that resolution.

    ``forward(image, encoder_output) -> [B, out_channels, H, W]`` (logits / heatmaps).
    ``features`` are the decoder's widths at full, 1/2, 1/4 and 1/8 resolution.
    """

    def __init__(self, encoder_config: HybridConfig, out_channels: int,
                 features: tuple[int, int, int, int] | None = None) -> None:
        super().__init__()
        self.encoder_config = encoder_config
        self.out_channels = out_channels
        self.features = tuple(int(f) for f in (features or encoder_config.stage_channels))
        if len(self.features) != 4:
            raise ValueError(f"features must have 4 entries (full, 1/2, 1/4, 1/8), got {self.features!r}")
        skips = encoder_config.stage_channels
        f0, f1, f2, f3 = self.features
        self.up4 = _up(encoder_config.dim, f3)
        self.dec3 = ConvBlock(f3 + skips[3], f3)
        self.up3 = _up(f3, f2)
        self.dec2 = ConvBlock(f2 + skips[2], f2)
        self.up2 = _up(f2, f1)
        self.dec1 = ConvBlock(f1 + skips[1], f1)
        self.up1 = _up(f1, f0)
        self.dec0 = ConvBlock(f0 + skips[0], f0)
        self.out = nn.Conv2d(f0, out_channels, 1)

    def forward(self, image: torch.Tensor, encoder_output: HybridOutput) -> torch.Tensor:
        if not isinstance(encoder_output, HybridOutput):
            raise TypeError(f"the U-Net decoder takes a HybridOutput, got {type(encoder_output).__name__}")
        s0, s1, s2, s3 = encoder_output.stages
        x = self.dec3(torch.cat([self.up4(encoder_output.patch_map(-1)), s3], dim=1))
        x = self.dec2(torch.cat([self.up3(x), s2], dim=1))
        x = self.dec1(torch.cat([self.up2(x), s1], dim=1))
        return self.out(self.dec0(torch.cat([self.up1(x), s0], dim=1)))


class UNetHeatmapHead(UNetDecoder2D):
    """The U-Net decoder with one Gaussian heatmap per landmark (read with ``heatmap_peaks``)."""

    @property
    def n_landmarks(self) -> int:
        return self.out_channels
