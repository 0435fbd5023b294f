"""The foundation encoder (ViT/8), the task heads, the ResNet50 baselines and LoRA.

The ResNet50 baselines come from MONAI, a training-only dependency (the ``train`` extra):
``ResNet50Classifier`` and ``ResNet50UNet`` are imported on first use, so importing this
package, building or loading a ViT or hybrid model and inference never import MONAI.
"""

from .build import (
    BASELINE_ENCODER,
    TRAINABLE_MODES,
    TaskModel,
    architecture_of,
    build_from_architecture,
    build_model,
    set_trainable,
)
from .heads import (
    HeatmapHead,
    LinearClassifierHead,
    UNETRDecoder2D,
    gaussian_heatmaps,
    heatmap_peaks,
)
from .lora import LoRALinear, add_lora, has_lora, lora_config, lora_state_dict, merge_lora
from .vit import VIT_CONFIGS, EncoderOutput, ViTConfig, ViTEncoder, vit_config

__all__ = [
    "BASELINE_ENCODER",
    "TRAINABLE_MODES",
    "VIT_CONFIGS",
    "EncoderOutput",
    "HeatmapHead",
    "LinearClassifierHead",
    "LoRALinear",
    "ResNet50Classifier",
    "ResNet50UNet",
    "TaskModel",
    "UNETRDecoder2D",
    "ViTConfig",
    "ViTEncoder",
    "add_lora",
    "architecture_of",
    "build_from_architecture",
    "build_model",
    "gaussian_heatmaps",
    "has_lora",
    "heatmap_peaks",
    "lora_config",
    "lora_state_dict",
    "merge_lora",
    "set_trainable",
    "vit_config",
]


_BASELINES = ("ResNet50Classifier", "ResNet50UNet")


def __getattr__(name: str):
    if name in _BASELINES:
        from . import baseline  # imports monai

        return getattr(baseline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
