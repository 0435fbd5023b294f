"""Low-rank adapters (LoRA) for the encoder's attention layers.

``add_lora`` wraps the chosen Linear layers of every attention module in a
``LoRALinear``: the pretrained weight stays frozen and a low-rank update
``scaling * B @ A`` is learned beside it. B starts at zero, so an adapted model starts
exactly as the pretrained one. ``merge_lora`` folds the updates back into plain Linear
layers, so a merged model has the state dict of a plain model and loads without this
module.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .vit import Attention

LORA_TARGETS = ("qkv", "proj")
ADAPTER_NAMES = ("lora_a", "lora_b")  # parameter names of the adapters


class LoRALinear(nn.Module):
    """``base(x) + scaling * x @ A^T @ B^T`` with ``base`` frozen and ``scaling = alpha / rank``."""

    def __init__(self, base: nn.Linear, rank: int = 8, alpha: float = 16) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRA wraps nn.Linear layers, got {type(base).__name__}")
        if rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {rank}")
        self.base = base
        self.base.requires_grad_(False)
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        weight = base.weight
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, dtype=weight.dtype, device=weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, dtype=weight.dtype, device=weight.device))
        # A as a Linear layer's default init; B = 0 so the adapter starts as a no-op.
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def delta_weight(self) -> torch.Tensor:
        """The update to the base weight, [out_features, in_features]."""
        return self.scaling * (self.lora_b @ self.lora_a)

    def merged(self) -> nn.Linear:
        """A plain Linear layer equal to this adapted one."""
        base = self.base
        linear = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
        linear.to(device=base.weight.device, dtype=base.weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(base.weight + self.delta_weight())
            if base.bias is not None:
                linear.bias.copy_(base.bias)
        return linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scaling * ((x @ self.lora_a.t()) @ self.lora_b.t())


def _attention_modules(module: nn.Module) -> list[Attention]:
    return [m for m in module.modules() if isinstance(m, Attention)]


def add_lora(
    module: nn.Module, rank: int = 8, alpha: float = 16, targets: tuple[str, ...] = LORA_TARGETS
) -> nn.Module:
    """Wrap the ``targets`` Linear layers of every attention module in ``module`` (an
    encoder, or a whole task model) in LoRA adapters, in place; returns ``module``.

    Only the wrapped layers' base weights are frozen here; ``build.set_trainable``
    decides what else trains.
    """
    unknown = set(targets) - set(LORA_TARGETS)
    if unknown:
        raise ValueError(f"unknown LoRA targets {sorted(unknown)}; known: {', '.join(LORA_TARGETS)}")
    attentions = _attention_modules(module)
    if not attentions:
        raise ValueError(f"{type(module).__name__} has no attention modules to adapt")
    for attention in attentions:
        for name in targets:
            layer = getattr(attention, name)
            if isinstance(layer, LoRALinear):
                raise ValueError(f"{type(module).__name__} already has LoRA adapters on {name!r}")
            setattr(attention, name, LoRALinear(layer, rank, alpha))
    return module


def has_lora(module: nn.Module) -> bool:
    return any(isinstance(m, LoRALinear) for m in module.modules())


def lora_config(module: nn.Module) -> dict | None:
    """``{"rank", "alpha", "targets"}`` of the adapters in ``module``, or None without any."""
    found: dict[str, tuple[int, float]] = {}
    for attention in _attention_modules(module):
        for name in LORA_TARGETS:
            layer = getattr(attention, name)
            if isinstance(layer, LoRALinear):
                found.setdefault(name, (layer.rank, layer.alpha))
    if not found:
        return None
    settings = set(found.values())
    if len(settings) > 1:
        raise ValueError(f"LoRA adapters with different rank/alpha in one model: {sorted(settings)}")
    rank, alpha = settings.pop()
    return {"rank": rank, "alpha": alpha, "targets": [name for name in LORA_TARGETS if name in found]}


def merge_lora(module: nn.Module) -> nn.Module:
    """Fold every LoRA adapter in ``module`` into a plain Linear layer, in place; returns
    ``module``, whose state dict is then that of the model without adapters."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                setattr(parent, name, child.merged())
    return module


def lora_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter weights (``...lora_a`` / ``...lora_b``) of ``module``."""
    return {
        key: value for key, value in module.state_dict().items() if key.rsplit(".", 1)[-1] in ADAPTER_NAMES
    }
