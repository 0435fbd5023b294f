"""The CPU hybrid encoder and the training state that survives a session's end.

A hybrid model is built, saved as task weights, loaded back from its manifest and run on
a real synthetic study; a finetuning run stopped halfway and resumed from its compact
checkpoint ends where an uninterrupted run ends; SimMIM pretraining resumes at the step
it stopped; the scanner-appearance augmentation changes images but never labels.
"""

import json

import numpy as np
import pytest
import torch

from CMRFoundationLib.inference import TaskPredictor
from CMRFoundationLib.models import architecture_of, build_from_architecture, build_model
from CMRFoundationLib.models.hybrid import HybridEncoder, HybridOutput, UNetDecoder2D, hybrid_config
from CMRFoundationLib.weights import load_task_state, read_manifest, save_encoder_weights
from cmrtrain.augment import AppearanceConfig, random_appearance, render_from_labels
from cmrtrain.checkpoint import StopRequest, load_compact
from cmrtrain.finetune import EpochOrder, FinetuneConfig, finetune

SIZE = 64


@pytest.mark.parametrize("task_name", ["seg_sax_cine", "rv_insertion", "cine_view"])
def test_hybrid_models_rebuild_from_their_architecture(task_name):
    torch.manual_seed(0)
    model = build_model(task_name, "hybrid_nano", image_size=SIZE).eval()
    architecture = json.loads(json.dumps(architecture_of(model)))  # as a manifest stores it
    assert architecture["encoder"]["config"]["family"] == "hybrid"
    rebuilt = build_from_architecture(task_name, architecture).eval()
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected, got = model(x), rebuilt(x)
    torch.testing.assert_close(got, expected)
    if model.task.kind != "classification":
        assert got.shape == (2, model.task.n_outputs, SIZE, SIZE)
        assert isinstance(model.head, UNetDecoder2D)


def test_hybrid_encoder_gives_full_resolution_skips_and_tokens():
    encoder = HybridEncoder(hybrid_config("hybrid_nano", image_size=SIZE))
    out = encoder(torch.randn(1, 3, 96, 80))  # another size: the position grid is interpolated
    assert isinstance(out, HybridOutput) and out.grid == (6, 5)
    assert [s.shape[-2:] for s in out.stages] == [(96, 80), (48, 40), (24, 20), (12, 10)]
    assert out.patch_map(-1).shape == (1, encoder.dim, 6, 5)
    with pytest.raises(ValueError, match="multiple of 16"):
        encoder(torch.randn(1, 3, 72, 72))


def _config(tmp_path, sample_study, **changes) -> FinetuneConfig:
    values = dict(
        task="seg_sax_cine", out=str(tmp_path / "run"), encoder="hybrid_nano", sources=["synthetic"],
        synthetic_root=str(sample_study), train_split="all", val_split=None, epochs=2, batch_size=4,
        spacing_mm=2.0, size=SIZE, workers=0, checkpoint=str(tmp_path / "run.pt"), checkpoint_every_steps=2,
        appearance=AppearanceConfig(), seed=3,
    )
    values.update(changes)
    return FinetuneConfig(**values)


@pytest.mark.slow
def test_a_stopped_finetuning_run_resumes_where_it_stopped(sample_study, sample_stacks, tmp_path):
    torch.set_num_threads(1)
    whole = finetune(_config(tmp_path / "a", sample_study, checkpoint=None), log=lambda m: None)
    n = whole["total_steps"]
    assert whole["finished"] and n >= 4

    class StopAfter(StopRequest):  # a session ending after `steps` checks of the flag
        def __init__(self, steps):
            super().__init__()
            self.left = steps

        @property
        def requested(self):
            self.left -= 1
            return self.left < 0

        reason = "test stop"

    config = _config(tmp_path / "b", sample_study)
    first = finetune(config, log=lambda m: None, stop=StopAfter(3))
    assert not first["finished"] and 0 < first["steps"] < n
    saved = load_compact(config.checkpoint)
    assert saved["step"] == first["steps"]
    assert all(v.dtype == torch.float16 for v in saved["model"].values() if v.is_floating_point())
    with pytest.raises(SystemExit, match="--resume"):  # never overwritten by a fresh run
        finetune(config, log=lambda m: None)
    with pytest.raises(SystemExit, match="different settings"):
        finetune(_config(tmp_path / "b", sample_study, lr=1e-2), log=lambda m: None, resume=True)
    resumed = finetune(config, log=lambda m: None, resume=True)
    assert resumed["finished"] and resumed["steps"] == n
    # Same batches, same schedule: only the float16 rounding at the stop differs.
    a = read_manifest(tmp_path / "a" / "run" / "weights", "seg_sax_cine")
    b = read_manifest(tmp_path / "b" / "run" / "weights", "seg_sax_cine")
    assert a["architecture"] == b["architecture"]
    state_a = load_task_state(tmp_path / "a" / "run" / "weights", "seg_sax_cine")[0]
    state_b = load_task_state(tmp_path / "b" / "run" / "weights", "seg_sax_cine")[0]
    difference = sum(float((state_a[k].float() - state_b[k].float()).norm()) for k in state_a)
    size = sum(float(state_a[k].float().norm()) for k in state_a)
    print(f"relative weight difference {difference / size:.2e}")
    assert difference / size < 2e-3

    stacks, _ = sample_stacks
    sax = next(s for s in stacks if s.info.series_number == 6)
    prediction = TaskPredictor.load("seg_sax_cine", tmp_path / "b" / "run" / "weights", "cpu").predict_stack(sax)
    assert prediction.labels.shape == sax.pixels.shape


def test_epoch_order_is_reproducible_and_skips():
    order = EpochOrder(10, seed=1)
    order.set_epoch(2)
    full = list(order)
    order.set_epoch(2, skip=4)
    assert list(order) == full[4:] and len(order) == 6
    order.set_epoch(3)
    assert sorted(order) == list(range(10)) and list(order) != full
    balanced = EpochOrder(6, seed=0, weights=np.array([1.0, 1.0, 1.0, 1.0, 1.0, 20.0]))
    assert list(balanced).count(5) > 3  # drawn in proportion to the weights


def test_appearance_changes_pixels_not_anatomy():
    rng = np.random.default_rng(0)
    labels = torch.zeros(64, 64, dtype=torch.int64)
    labels[20:40, 20:40] = 1
    labels[26:34, 26:34] = 2
    image = torch.full((3, 64, 64), -0.8)
    image[:, labels == 1] = 0.2
    image[:, labels == 2] = 0.9
    rendered = render_from_labels(image, labels, rng)
    assert rendered.shape == image.shape and rendered.min() >= -1 and rendered.max() <= 1
    inner = rendered[0][labels == 2].mean() - rendered[0][labels == 1].mean()
    assert abs(float(inner) - 0.7) > 0.05  # contrast between structures redrawn
    everything = AppearanceConfig(bias_p=1, blur_p=1, low_resolution_p=1, through_plane_p=1, label_render_p=1)
    out = random_appearance(image.clone(), labels, everything, rng)
    assert not torch.allclose(out, image) and torch.isfinite(out).all()
    assert torch.equal(random_appearance(image.clone(), labels, AppearanceConfig.none(), rng), image)


def test_mim_pretraining_resumes_and_exports_an_encoder_finetuning_loads(tmp_path):
    import pretrain_mim

    data = tmp_path / "images"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        np.savez(data / f"case{i}.npz", image=rng.random((4, 70, 60)).astype(np.float32))
    config = json.loads((pretrain_mim.REPO / "Training" / "configs" / "mim_hybrid_cpu.json").read_text())
    config.update(encoder="hybrid_nano", data=[str(data)], batch_size=2, crop=32, epochs=2, log_every=1,
                  checkpoint_every_steps=100, preprocess={"spacing_mm": 2.0, "size": 48, "percentile": 98.0})
    config_file = tmp_path / "mim.json"
    config_file.write_text(json.dumps(config))
    checkpoint, out = tmp_path / "mim.pt", tmp_path / "run"
    args = ["--config", str(config_file), "--checkpoint", str(checkpoint), "--out", str(out), "--threads", "1"]
    assert pretrain_mim.main([*args, "--max-steps", "3"])["step"] == 3
    assert load_compact(checkpoint)["step"] == 3
    with pytest.raises(SystemExit, match="--resume"):
        pretrain_mim.main(args)
    assert pretrain_mim.main([*args, "--resume"])["step"] == 8  # 2 epochs of 4 batches
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 9))
    manifest = json.loads((out / "encoder.json").read_text())
    assert manifest["method"] == "SimMIM" and manifest["steps"] == 8

    from cmrtrain.finetune import load_encoder_weights

    model = build_model("seg_sax_cine", "hybrid_nano", image_size=SIZE)  # another grid: position embedding resized
    load_encoder_weights(model, out / manifest["weights"])
    exported = save_encoder_weights(tmp_path / "again", model.encoder.state_dict())
    assert exported[1]
