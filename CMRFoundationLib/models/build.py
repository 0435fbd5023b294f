"""Task models: the encoder and the head a task needs, built from the task registry.

``build_model(task, encoder)`` gives a ``TaskModel``: the ViT/8 encoder with the head of
the task's kind (UNETR decoder for segmentation, heatmap decoder for landmarks, linear
classifier for classification), or with ``encoder="resnet50"`` the ResNet50 baseline of
that kind (MONAI, imported only then). ``architecture_of`` describes a model as a JSON-able dict (stored in the
weights manifest) and ``build_from_architecture`` rebuilds the same module from it.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from ..tasks import CLASSIFICATION, LANDMARKS, SEGMENTATION, TaskSpec, get_task
from .heads import DECODER_FEATURES, PATCH_SIZE, HeatmapHead, LinearClassifierHead, UNETRDecoder2D
from .hybrid import (
    HYBRID_CONFIGS,
    HybridConfig,
    HybridEncoder,
    UNetDecoder2D,
    UNetHeatmapHead,
    hybrid_config,
    is_hybrid_config,
)
from .lora import ADAPTER_NAMES, add_lora, has_lora, lora_config
from .vit import VIT_CONFIGS, ViTConfig, ViTEncoder, vit_config

BASELINE_ENCODER = "resnet50"
ARCHITECTURE_FORMAT = 1
TRAINABLE_MODES = ("full", "frozen", "lora")


class TaskModel(nn.Module):
    """An encoder and a task head with one forward contract for every task kind.

    ``forward(x [B, 3, H, W])`` returns segmentation logits [B, C, H, W], landmark
    heatmaps [B, K, H, W] or class logits [B, C], by ``task.kind``. For the ResNet50
    baselines ``encoder`` is None and ``head`` is the whole network.
    """

    def __init__(self, task: TaskSpec, encoder: ViTEncoder | HybridEncoder | None, head: nn.Module,
                 encoder_name: str) -> None:
        super().__init__()
        self.task = task
        self.encoder = encoder
        self.head = head
        self.encoder_name = encoder_name

    @property
    def is_baseline(self) -> bool:
        return self.encoder is None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.task.name}: expected images [B, 3, H, W], got shape {tuple(x.shape)}")
        if self.encoder is None:
            return self.head(x)
        tokens = self.encoder(x)
        if self.task.kind == CLASSIFICATION:
            return self.head(tokens)
        return self.head(x, tokens)

    def train(self, mode: bool = True) -> TaskModel:
        super().train(mode)
        # A fully frozen encoder behaves as at inference (no stochastic depth), as in
        # DINO's linear evaluation.
        if mode and self.encoder is not None and not any(p.requires_grad for p in self.encoder.parameters()):
            self.encoder.eval()
        return self

    def describe(self) -> str:
        """One line: task, encoder, head and parameter counts."""
        head_params = _count(self.head.parameters())
        trainable = _count(p for p in self.parameters() if p.requires_grad)
        if self.encoder is None:
            body = f"{type(self.head).__name__} baseline ({head_params / 1e6:.2f}M params)"
        else:
            lora = lora_config(self.encoder)
            adapters = f" with LoRA rank {lora['rank']}" if lora else ""
            family = "hybrid" if isinstance(self.encoder, HybridEncoder) else "ViT"
            body = (
                f"{family} {self.encoder_name} encoder{adapters} ({_count(self.encoder.parameters()) / 1e6:.1f}M params)"
                f" + {type(self.head).__name__} ({head_params / 1e6:.2f}M params)"
            )
        return (
            f"{self.task.name} ({self.task.kind}, {self.task.n_outputs} outputs): {body}; "
            f"{trainable / 1e6:.2f}M trainable"
        )


def _count(parameters) -> int:
    return sum(p.numel() for p in parameters)


def _task(task: TaskSpec | str) -> TaskSpec:
    return get_task(task) if isinstance(task, str) else task


# The head type each task kind takes with each encoder family.
VIT, HYBRID, BASELINE = "vit", "hybrid", "baseline"
_HEAD_TYPES = {
    VIT: {SEGMENTATION: "UNETRDecoder2D", LANDMARKS: "HeatmapHead", CLASSIFICATION: "LinearClassifierHead"},
    HYBRID: {SEGMENTATION: "UNetDecoder2D", LANDMARKS: "UNetHeatmapHead", CLASSIFICATION: "LinearClassifierHead"},
    BASELINE: {SEGMENTATION: "ResNet50UNet", LANDMARKS: "ResNet50UNet", CLASSIFICATION: "ResNet50Classifier"},
}


def _family(config: ViTConfig | HybridConfig | None) -> str:
    if config is None:
        return BASELINE
    return HYBRID if isinstance(config, HybridConfig) else VIT


def _default_head(task: TaskSpec, family: str, config: ViTConfig | HybridConfig | None = None) -> dict:
    head_type = _HEAD_TYPES[family][task.kind]
    if head_type == "LinearClassifierHead":
        return {"type": head_type, "n_last_blocks": min(4, config.depth)}
    if head_type in ("UNETRDecoder2D", "HeatmapHead"):
        return {"type": head_type, "features": list(DECODER_FEATURES)}
    if head_type in ("UNetDecoder2D", "UNetHeatmapHead"):
        return {"type": head_type, "features": list(config.stage_channels)}
    return {"type": head_type}


def _assemble(task: TaskSpec, encoder_name: str, config: ViTConfig | HybridConfig | None, head: dict,
              lora: dict | None) -> TaskModel:
    """The model for a task from its parts (shared by build_model and build_from_architecture)."""
    family = _family(config)
    baseline = family == BASELINE
    expected = _HEAD_TYPES[family][task.kind]
    if head.get("type") != expected:
        raise ValueError(
            f"{task.name}: a {task.kind} task with {encoder_name} takes a {expected} head, got {head.get('type')!r}"
        )
    if baseline:
        if lora:
            raise ValueError(f"{task.name}: the {encoder_name} baseline has no attention layers for LoRA")
        from .baseline import ResNet50Classifier, ResNet50UNet  # monai (the train extra): imported on use

        network = ResNet50Classifier(task.n_outputs) if task.kind == CLASSIFICATION else ResNet50UNet(task.n_outputs)
        return TaskModel(task, None, network, encoder_name)
    if family == VIT and config.patch_size != PATCH_SIZE:
        raise ValueError(f"the task heads expect patch size {PATCH_SIZE}; encoder {encoder_name} has {config.patch_size}")
    encoder: nn.Module = HybridEncoder(config) if family == HYBRID else ViTEncoder(config)
    if task.kind == CLASSIFICATION:
        module: nn.Module = LinearClassifierHead(config.dim, task.n_outputs, int(head.get("n_last_blocks", 4)))
    elif family == HYBRID:
        head_class = UNetHeatmapHead if task.kind == LANDMARKS else UNetDecoder2D
        module = head_class(config, task.n_outputs, tuple(head.get("features", config.stage_channels)))
    else:
        head_class = HeatmapHead if task.kind == LANDMARKS else UNETRDecoder2D
        features = tuple(head.get("features", DECODER_FEATURES))
        module = head_class(config.dim, config.depth, task.n_outputs, config.in_channels, features)
    if lora:
        add_lora(encoder, int(lora["rank"]), float(lora["alpha"]), tuple(lora["targets"]))
    return TaskModel(task, encoder, module, encoder_name)


def build_model(
    task: TaskSpec | str,
    encoder: str | ViTConfig | HybridConfig | dict = "vit_small",
    image_size: int | None = None,
    decoder_features: tuple[int, int, int, int] | None = None,
) -> TaskModel:
    """The model for ``task``: a ViT/8 or hybrid encoder (a preset name, config or config
    dict) with the head of the task's kind, or with ``encoder="resnet50"`` the ResNet50
    baseline. ``image_size`` sets the size the position embedding is learned for (other
    sizes are interpolated); the fully convolutional baselines ignore it.
    ``decoder_features`` narrows or widens the decoder (full resolution first).
    """
    task = _task(task)
    known = (*VIT_CONFIGS, *HYBRID_CONFIGS, BASELINE_ENCODER)
    if isinstance(encoder, str) and encoder not in known:
        raise KeyError(f"unknown encoder {encoder!r}; known: {', '.join(known)}")
    if encoder == BASELINE_ENCODER:
        return _assemble(task, BASELINE_ENCODER, None, _default_head(task, BASELINE), None)
    overrides = {} if image_size is None else {"image_size": int(image_size)}
    hybrid = is_hybrid_config(encoder)
    config = hybrid_config(encoder, **overrides) if hybrid else vit_config(encoder, **overrides)
    presets = HYBRID_CONFIGS if hybrid else VIT_CONFIGS
    if isinstance(encoder, str):
        name = encoder
    else:
        name = next((preset for preset, c in presets.items() if c == config), "custom")
    head = _default_head(task, _family(config), config)
    if decoder_features is not None and "features" in head:
        head["features"] = [int(f) for f in decoder_features]
    return _assemble(task, name, config, head, None)


def _head_spec(head: nn.Module) -> dict:
    if isinstance(head, (UNETRDecoder2D, UNetDecoder2D)):  # the heatmap heads included
        return {"type": type(head).__name__, "features": list(head.features)}
    if isinstance(head, LinearClassifierHead):
        return {"type": "LinearClassifierHead", "n_last_blocks": head.n_last_blocks}
    baseline = sys.modules.get(f"{__package__}.baseline")  # no baseline head exists unless it was imported
    if baseline is not None and isinstance(head, (baseline.ResNet50Classifier, baseline.ResNet50UNet)):
        return {"type": type(head).__name__}
    raise TypeError(f"unknown head type {type(head).__name__}")


def architecture_of(model: TaskModel) -> dict:
    """A JSON-able description of ``model`` from which ``build_from_architecture``
    rebuilds the same module (same state-dict keys and shapes)."""
    if not isinstance(model, TaskModel):
        raise TypeError(f"architecture_of takes a TaskModel, got {type(model).__name__}")
    encoder = {"name": model.encoder_name}
    if model.encoder is not None:
        encoder["config"] = model.encoder.config.to_dict()
    return {
        "format": ARCHITECTURE_FORMAT,
        "task": model.task.name,
        "kind": model.task.kind,
        "n_outputs": model.task.n_outputs,
        "baseline": model.is_baseline,
        "encoder": encoder,
        "head": _head_spec(model.head),
        "lora": None if model.encoder is None else lora_config(model.encoder),
    }


def build_from_architecture(task: TaskSpec | str, architecture: dict) -> TaskModel:
    """Rebuild the (untrained) model that ``architecture`` (from ``architecture_of``) describes."""
    task = _task(task)
    missing = [key for key in ("format", "kind", "n_outputs", "baseline", "encoder", "head") if key not in architecture]
    if missing:
        raise ValueError(f"model architecture lacks {', '.join(missing)}: {architecture!r}")
    if architecture["format"] != ARCHITECTURE_FORMAT:
        raise ValueError(f"model architecture format {architecture['format']!r} is not {ARCHITECTURE_FORMAT}")
    if architecture["kind"] != task.kind or architecture["n_outputs"] != task.n_outputs:
        raise ValueError(
            f"architecture is for a {architecture['kind']} model with {architecture['n_outputs']} outputs; "
            f"task {task.name} needs {task.kind} with {task.n_outputs}"
        )
    encoder = architecture["encoder"]
    if architecture["baseline"]:
        return _assemble(task, encoder["name"], None, architecture["head"], architecture.get("lora"))
    if "config" not in encoder:
        raise ValueError(f"model architecture lacks the encoder config: {encoder!r}")
    config = encoder["config"]
    config = hybrid_config(config) if is_hybrid_config(config) else vit_config(config)
    return _assemble(task, encoder["name"], config, architecture["head"], architecture.get("lora"))


def set_trainable(model: TaskModel, mode: str, lora_rank: int = 8, lora_alpha: float = 16) -> int:
    """Choose what trains; returns the number of trainable parameters.

    ``full``: everything. ``frozen``: the head only. ``lora``: the head and LoRA
    adapters on the encoder's attention (added with ``lora_rank``/``lora_alpha`` when the
    encoder has none). The baselines have no pretrained encoder: only ``full`` applies.
    """
    if mode not in TRAINABLE_MODES:
        raise ValueError(f"unknown training mode {mode!r}; known: {', '.join(TRAINABLE_MODES)}")
    if model.encoder is None and mode != "full":
        raise ValueError(f"{model.task.name}: the {model.encoder_name} baseline trains only in mode 'full', not {mode!r}")
    model.requires_grad_(True)
    if mode == "frozen":
        model.encoder.requires_grad_(False)
    elif mode == "lora":
        if not has_lora(model.encoder):
            add_lora(model.encoder, lora_rank, lora_alpha)
        for name, parameter in model.encoder.named_parameters():
            parameter.requires_grad_(name.rsplit(".", 1)[-1] in ADAPTER_NAMES)
    model.train(model.training)  # re-apply the frozen encoder's eval mode
    return _count(p for p in model.parameters() if p.requires_grad)
