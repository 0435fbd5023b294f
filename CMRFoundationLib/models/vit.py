"""The foundation encoder: a plain ViT with 8x8 patches (ViT-S/8 by default).

Same layout as DINO's ViT (pre-norm blocks, learned position embedding with a class
token, final LayerNorm), with attention through ``F.scaled_dot_product_attention`` so
that fused kernels are used where the device has them. The encoder returns the tokens
of every block, normalised by the final LayerNorm as in DINO's
``get_intermediate_layers``: heads take the class tokens and patch tokens they need.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ViTConfig:
    dim: int = 384
    depth: int = 12
    heads: int = 6
    patch_size: int = 8
    mlp_ratio: float = 4.0
    in_channels: int = 3
    # Position embeddings are learned for this image size and interpolated for others.
    image_size: int = 224
    drop_path: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


# Named configurations. vit_small is the method's encoder (~21.7M parameters);
# vit_nano is for tests and CPU-sized experiments, vit_base for larger experiments.
VIT_CONFIGS = {
    "vit_nano": ViTConfig(dim=96, depth=4, heads=3),
    "vit_tiny": ViTConfig(dim=192, depth=12, heads=3),
    "vit_small": ViTConfig(dim=384, depth=12, heads=6),
    "vit_base": ViTConfig(dim=768, depth=12, heads=12),
}


def vit_config(name_or_config: str | ViTConfig | dict, **overrides) -> ViTConfig:
    """A ViTConfig from a preset name, a dict (e.g. from a manifest) or a config."""
    if isinstance(name_or_config, ViTConfig):
        base = name_or_config
    elif isinstance(name_or_config, dict):
        base = ViTConfig(**name_or_config)
    else:
        try:
            base = VIT_CONFIGS[name_or_config]
        except KeyError:
            raise KeyError(f"unknown encoder {name_or_config!r}; known: {', '.join(VIT_CONFIGS)}") from None
    return ViTConfig(**{**asdict(base), **overrides})


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch per sample while training."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape[0], *([1] * (x.ndim - 1)), device=x.device, dtype=x.dtype) >= self.p
        return x * keep / (1.0 - self.p)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


@dataclass
class EncoderOutput:
    """Tokens of every block, each [batch, 1 + rows*cols, dim], class token first."""

    blocks: list[torch.Tensor]
    grid: tuple[int, int]  # patch rows, patch cols

    def cls_token(self, block: int = -1) -> torch.Tensor:
        return self.blocks[block][:, 0]

    def patch_tokens(self, block: int = -1) -> torch.Tensor:
        return self.blocks[block][:, 1:]

    def patch_map(self, block: int = -1) -> torch.Tensor:
        """Patch tokens of a block as a feature map [batch, dim, rows, cols]."""
        tokens = self.patch_tokens(block)
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *self.grid)


class TokenEncoder(nn.Module):
    """What the ViT and the hybrid encoder share: a class token, a learned position
    embedding (interpolated to other grids), pre-norm transformer blocks and the final
    LayerNorm applied to every block's output. Subclasses embed the image into patch
    tokens, call ``_build_transformer`` last in ``__init__`` and ``_encode`` in forward."""

    config: ViTConfig

    def _build_transformer(self, n_patches: int) -> None:
        c = self.config
        if c.dim % c.heads:
            raise ValueError(f"dim {c.dim} is not divisible by heads {c.heads}")
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + n_patches, c.dim))
        # On the CPU even when built on the meta device (weights.py checks shapes that way): .tolist() needs data.
        rates = torch.linspace(0, c.drop_path, c.depth, device="cpu").tolist()
        self.blocks = nn.ModuleList(Block(c.dim, c.heads, c.mlp_ratio, r) for r in rates)
        self.norm = nn.LayerNorm(c.dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(_init_weights)

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def depth(self) -> int:
        return self.config.depth

    def _encode(self, patches: torch.Tensor, grid: tuple[int, int]) -> list[torch.Tensor]:
        """Every block's normalised tokens for patch tokens [B, rows*cols, dim] on ``grid``."""
        x = torch.cat([self.cls_token.expand(patches.shape[0], -1, -1), patches], dim=1)
        x = x + resize_position_embedding(self.pos_embed, *grid)
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(self.norm(x))
        return outputs


class ViTEncoder(TokenEncoder):
    def __init__(self, config: ViTConfig | str = "vit_small") -> None:
        super().__init__()
        self.config = config = vit_config(config)
        self.patch_embed = nn.Conv2d(config.in_channels, config.dim, config.patch_size, config.patch_size)
        self._build_transformer((config.image_size // config.patch_size) ** 2)

    @property
    def patch_size(self) -> int:
        return self.config.patch_size

    def forward(self, x: torch.Tensor) -> EncoderOutput:
        _, _, h, w = x.shape
        p = self.config.patch_size
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {p}")
        grid = (h // p, w // p)
        return EncoderOutput(self._encode(self.patch_embed(x).flatten(2).transpose(1, 2), grid), grid)


def resize_position_embedding(pos_embed: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """A [1, 1 + side*side, dim] class + square-grid embedding resized to rows x cols patches."""
    side = int(math.sqrt(pos_embed.shape[1] - 1))
    if rows == side and cols == side:
        return pos_embed
    grid = pos_embed[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", align_corners=False)
    return torch.cat([pos_embed[:, :1], grid.flatten(2).transpose(1, 2)], dim=1)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
