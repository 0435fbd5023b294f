"""Task models: output contracts, gradients, heads, ResNet50 baselines, LoRA, rebuilding."""

from __future__ import annotations

import json

import pytest
import torch

from CMRFoundationLib.models import (
    LinearClassifierHead,
    LoRALinear,
    ResNet50Classifier,
    ResNet50UNet,
    UNETRDecoder2D,
    ViTEncoder,
    add_lora,
    architecture_of,
    build_from_architecture,
    build_model,
    gaussian_heatmaps,
    heatmap_peaks,
    lora_state_dict,
    merge_lora,
    set_trainable,
    vit_config,
)
from CMRFoundationLib.tasks import CLASSIFICATION, TASKS

# Tiny models and images keep the file fast on a CPU.
ENCODER = "vit_nano"
SIZE = 64


def images(rows: int = SIZE, cols: int = SIZE, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, rows, cols, generator=torch.Generator().manual_seed(seed))


def expected_shape(task, batch: int, rows: int, cols: int) -> tuple[int, ...]:
    if task.kind == CLASSIFICATION:
        return (batch, task.n_outputs)
    return (batch, task.n_outputs, rows, cols)


def grad_norm(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


@pytest.mark.parametrize("task", TASKS.values(), ids=list(TASKS))
def test_every_task_forward_and_backward(task):
    torch.manual_seed(0)
    model = build_model(task, ENCODER, image_size=SIZE)
    x = images(32, 48)  # non-square: a 4x6 token grid
    out = model(x)
    assert out.shape == expected_shape(task, 2, 32, 48)
    out.square().mean().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(parameter.grad).all(), name
    assert grad_norm(model.encoder) > 0 and grad_norm(model.head) > 0


def test_vit_small_size_and_classifier_features():
    model = build_model("disease", "vit_small")
    n_encoder = sum(p.numel() for p in model.encoder.parameters())
    assert abs(n_encoder - 21.7e6) < 0.1e6
    assert model.head.feature_dim == 1920 and model.head.linear.in_features == 1920
    model.eval()
    with torch.no_grad():
        tokens = model.encoder(images(batch=1))
        assert model.head.features(tokens).shape == (1, 1920)
        assert model.head(tokens).shape == (1, 5)


def test_decoder_sizes_and_errors():
    encoder = ViTEncoder(vit_config(ENCODER, image_size=SIZE)).eval()
    decoder = UNETRDecoder2D(encoder.dim, encoder.depth, out_channels=3).eval()
    for rows, cols in [(8, 8), (8, 24), (40, 16)]:  # down to a 1x1 token grid
        x = images(rows, cols)
        with torch.no_grad():
            assert decoder(x, encoder(x)).shape == (2, 3, rows, cols)
    with pytest.raises(ValueError, match="token grid"):
        decoder(images(32, 32), encoder(images(16, 16)))
    with pytest.raises(ValueError, match="not a multiple"):
        build_model("seg_lge", ENCODER)(images(36, 48))
    with pytest.raises(ValueError, match="at least 4 blocks"):
        UNETRDecoder2D(96, 3, 2)
    with pytest.raises(ValueError, match="expected images"):
        build_model("seg_lge", ENCODER)(torch.zeros(2, 1, 32, 32))


def test_gaussian_heatmaps():
    points = torch.tensor([[[10.0, 20.0], [float("nan"), 3.0]]])
    heat = gaussian_heatmaps(points, (32, 40), sigma_px=2.0)
    assert heat.shape == (1, 2, 32, 40)
    assert heat[0, 0, 10, 20] == 1.0 and heat[0, 0].argmax() == 10 * 40 + 20
    assert heat[0, 0, 10, 22] == pytest.approx(torch.exp(torch.tensor(-0.5)).item())
    assert (heat[0, 1] == 0).all()  # absent landmark
    with pytest.raises(ValueError, match="points must be"):
        gaussian_heatmaps(torch.zeros(2, 2), (8, 8), 2.0)


@pytest.mark.parametrize("sigma", [1.5, 3.0, 5.0])
def test_heatmap_peaks_sub_pixel(sigma):
    points = torch.tensor([[[10.3, 20.77], [5.5, 7.01]], [[25.9, 3.42], [14.0, 33.25]]])
    heat = 0.8 * gaussian_heatmaps(points, (32, 40), sigma)  # a predicted map need not peak at 1
    found, confidence = heatmap_peaks(heat)
    assert found.shape == (2, 2, 2) and confidence.shape == (2, 2)
    assert (found - points).abs().max() < 0.1
    assert torch.allclose(confidence, torch.full((2, 2), 0.8), atol=0.05)
    # At the border the arg-max is kept along that axis.
    edge, _ = heatmap_peaks(gaussian_heatmaps(torch.tensor([[[0.0, 12.4]]]), (16, 16), sigma))
    assert edge[0, 0, 0] == 0 and abs(edge[0, 0, 1] - 12.4) < 0.1


@pytest.mark.parametrize("task_name", ["disease", "seg_sax_cine", "rv_insertion"])
def test_baselines(task_name):
    torch.manual_seed(0)
    model = build_model(task_name, "resnet50")
    task = TASKS[task_name]
    assert model.is_baseline and model.encoder is None
    assert isinstance(model.head, ResNet50Classifier if task.kind == CLASSIFICATION else ResNet50UNet)
    x = images(64, 48)  # not a multiple of 32: the U-Net pads and crops
    out = model(x)
    assert out.shape == expected_shape(task, 2, 64, 48)
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert grad_norm(model) > 0
    with pytest.raises(ValueError, match="only in mode 'full'"):
        set_trainable(model, "frozen")


def test_trainable_modes():
    model = build_model("seg_lge", ENCODER, image_size=SIZE)
    n_head = sum(p.numel() for p in model.head.parameters())
    n_all = sum(p.numel() for p in model.parameters())
    assert set_trainable(model, "frozen") == n_head
    model.train()
    assert not model.encoder.training and model.head.training  # frozen encoder stays in eval mode
    assert set_trainable(model, "full") == n_all
    assert model.encoder.training
    with pytest.raises(ValueError, match="unknown training mode"):
        set_trainable(model, "partial")


def test_lora_starts_as_base_trains_adapters_and_merges():
    torch.manual_seed(0)
    model = build_model("seg_sax_cine", ENCODER, image_size=SIZE).eval()
    x = images()
    with torch.no_grad():
        before = model(x)
    n_trainable = set_trainable(model, "lora", lora_rank=4, lora_alpha=8)
    model.eval()
    n_blocks = model.encoder.depth
    assert sum(isinstance(m, LoRALinear) for m in model.modules()) == 2 * n_blocks  # qkv and proj
    with torch.no_grad():
        assert torch.equal(model(x), before)  # B = 0: the adapted model starts as the base one
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert all(name.startswith("head.") or name.endswith(("lora_a", "lora_b")) for name in trainable)
    assert any(name.endswith("lora_b") for name in trainable)
    assert n_trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    adapters = lora_state_dict(model)
    assert len(adapters) == 4 * n_blocks and all(key.startswith("encoder.blocks.") for key in adapters)

    # A gradient step's worth of change, then merge: same outputs, plain state dict.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRALinear):
                module.lora_b.normal_(std=0.05)
        adapted = model(x)
    assert not torch.allclose(adapted, before)
    merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model(x), adapted, atol=1e-5, rtol=1e-4)
    plain = build_model("seg_sax_cine", ENCODER, image_size=SIZE).eval()
    plain.load_state_dict(model.state_dict())  # strict: the merged model needs no LoRA code
    with torch.no_grad():
        torch.testing.assert_close(plain(x), adapted, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="already has LoRA"):
        add_lora(add_lora(ViTEncoder(ENCODER)))


def _with_lora(model):
    set_trainable(model, "lora")
    return model


@pytest.mark.parametrize(
    "make",
    [
        lambda: build_model("seg_4ch_cine", ENCODER, image_size=SIZE),
        lambda: build_model("cine_view", vit_config(ENCODER, depth=5, image_size=32)),
        lambda: _with_lora(build_model("rv_insertion", ENCODER, image_size=SIZE)),
        lambda: build_model("lge_presence", "resnet50"),
    ],
    ids=["segmentation", "classification-custom", "landmarks-lora", "baseline"],
)
def test_architecture_round_trip(make):
    torch.manual_seed(1)
    model = make().eval()
    architecture = json.loads(json.dumps(architecture_of(model)))  # as stored in the manifest
    rebuilt = build_from_architecture(model.task.name, architecture).eval()
    assert architecture_of(rebuilt) == architecture
    original = {key: value.shape for key, value in model.state_dict().items()}
    assert {key: value.shape for key, value in rebuilt.state_dict().items()} == original
    rebuilt.load_state_dict(model.state_dict())
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x), atol=0, rtol=0)


def test_architecture_mismatch_is_refused():
    architecture = architecture_of(build_model("seg_lge", ENCODER, image_size=SIZE))
    with pytest.raises(ValueError, match="task seg_4ch_cine needs segmentation with 5"):
        build_from_architecture("seg_4ch_cine", architecture)
    with pytest.raises(KeyError, match="unknown encoder 'resnet18'; known: vit_nano"):
        build_model("seg_lge", "resnet18")
    with pytest.raises(ValueError, match="lacks head"):
        build_from_architecture("seg_lge", {k: v for k, v in architecture.items() if k != "head"})


def test_eval_is_deterministic():
    torch.manual_seed(0)  # the train-mode draws below are random
    config = vit_config(ENCODER, image_size=SIZE, drop_path=0.5)  # stochastic depth while training
    model = build_model("rv_insertion", config)
    x = images()
    with torch.no_grad():
        model.train()
        assert not torch.equal(model(x), model(x))
        model.eval()
        assert torch.equal(model(x), model(x))


def test_linear_head_needs_enough_blocks():
    encoder = ViTEncoder(vit_config(ENCODER, image_size=SIZE))
    with torch.no_grad():
        tokens = encoder(images())
    with pytest.raises(ValueError, match="last 5 blocks"):
        LinearClassifierHead(encoder.dim, 3, n_last_blocks=5)(tokens)
