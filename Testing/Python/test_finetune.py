"""Finetuning on CPU at tiny size: the loss falls for each task family, and a run leaves
weights that the inference code loads and runs; evaluation scores them on native pixels."""

import sys

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from CMRFoundationLib.inference import TaskPredictor
from CMRFoundationLib.models import build_model
from CMRFoundationLib.models.vit import ViTEncoder, vit_config
from CMRFoundationLib.preprocess import PreprocessConfig
from CMRFoundationLib.tasks import get_task
from CMRFoundationLib.weights import check_folder_approved, read_manifest, save_encoder_weights
from cmrtrain.augment import AugmentConfig, random_rigid
from cmrtrain.data.synthetic import synthetic_samples
from cmrtrain.evaluation import evaluate, markdown_table
from cmrtrain.finetune import FinetuneConfig, TaskDataset, few_shot_subset, finetune, train_step
from cmrtrain.losses import loss_for

SMALL = PreprocessConfig(spacing_mm=2.0, size=64)


@pytest.mark.slow
@pytest.mark.parametrize("task_name", ["seg_sax_cine", "rv_insertion", "image_type"])
def test_a_few_steps_lower_the_loss(task_name, sample_study):
    """One task per family (segmentation, landmarks, classification) on real synthetic images."""
    torch.manual_seed(0)
    task = get_task(task_name)
    samples = synthetic_samples(task, sample_study)
    if task.kind == "classification":  # a balanced batch: two images of every class present
        samples = [s for c in range(task.n_outputs) for s in [x for x in samples if x.target == c][:2]]
    else:
        samples = samples[:: max(1, len(samples) // 8)][:8]
    batch = default_collate([TaskDataset(samples, task, SMALL)[i] for i in range(len(samples))])
    model = build_model(task, "vit_nano", image_size=SMALL.size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = loss_for(task, SMALL.spacing_mm)
    losses = [train_step(model, batch, loss_fn, optimizer, torch.device("cpu")) for _ in range(25)]
    assert np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < 0.8 * losses[0], losses


def test_augmentation_moves_labels_and_points_together():
    """A landmark placed on a labelled pixel stays on it after rotation and translation."""
    image = -torch.ones(3, 64, 64)
    labels = torch.zeros(64, 64, dtype=torch.int64)
    labels[20:24, 40:44] = 1
    image[:, 20:24, 40:44] = 1.0
    points = torch.tensor([[21.5, 41.5]])
    rng = np.random.default_rng(3)
    config = AugmentConfig(rotation_deg=30, translation_px=8, probability=1.0)
    moved_image, moved_labels, moved_points = random_rigid(image, labels, points, config, rng)
    rows, cols = np.nonzero(moved_labels.numpy() == 1)
    assert abs(rows.mean() - moved_points[0, 0].item()) < 0.6 and abs(cols.mean() - moved_points[0, 1].item()) < 0.6
    bright = np.argwhere(moved_image[0].numpy() > 0.5).mean(axis=0)
    np.testing.assert_allclose(bright, moved_points[0].numpy(), atol=0.8)


def test_few_shot_takes_n_per_class_and_n_cases(sample_study):
    classes = synthetic_samples("image_type", sample_study)
    picked = few_shot_subset(classes, get_task("image_type"), 2, seed=1)
    counts = np.bincount([s.target for s in picked], minlength=5)
    assert counts.max() <= 2 and (counts[np.bincount([s.target for s in classes], minlength=5) >= 2] == 2).all()
    dense = synthetic_samples("seg_sax_cine", sample_study)
    assert {s.case for s in few_shot_subset(dense, get_task("seg_sax_cine"), 1)} == {dense[0].case}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["full", "lora"])
def test_finetune_run_leaves_weights_that_predict(mode, sample_study, sample_stacks, tmp_path):
    # A DINO-style encoder export at another image size: the position grid is resized.
    encoder = ViTEncoder(vit_config("vit_nano", image_size=32))
    encoder_file, _ = save_encoder_weights(tmp_path, encoder.state_dict())
    config = FinetuneConfig(
        task="seg_sax_cine", out=str(tmp_path / "run"), encoder="vit_nano", mode=mode,
        encoder_weights=str(tmp_path / encoder_file), sources=["synthetic"], synthetic_root=str(sample_study),
        train_split="all", val_split=None,  # the one sample study is a "test" seed
        epochs=1, max_steps=2, batch_size=4, spacing_mm=SMALL.spacing_mm, size=SMALL.size, workers=0,
        weights_out=str(tmp_path / "weights"),
    )
    summary = finetune(config, log=lambda message: None)
    assert summary["steps"] == 2 and (tmp_path / "run" / "summary.json").exists()
    # Both weights folders the run writes are approved in their index as written: they load as they are.
    for folder in (tmp_path / "weights", tmp_path / "run" / "weights"):
        assert check_folder_approved(folder) == folder
    manifest = read_manifest(tmp_path / "weights", "seg_sax_cine")
    assert manifest["training"]["mode"] == mode and manifest["preprocessing"]["size"] == SMALL.size
    assert manifest["architecture"]["lora"] is None  # adapters are merged before saving

    stacks, _ = sample_stacks
    sax = next(s for s in stacks if s.info.series_number == 6)
    prediction = TaskPredictor.load("seg_sax_cine", tmp_path / "weights", "cpu").predict_stack(sax)
    assert prediction.labels.shape == sax.pixels.shape


def test_evaluation_scores_on_native_pixels(sample_study, tmp_path):
    task = get_task("seg_sax_cine")
    samples = synthetic_samples(task, sample_study)[:6]

    class Oracle:  # returns the truth: a perfect method must score Dice 1
        def predict_images(self, images, spacing):
            from CMRFoundationLib.inference import ImagePredictions

            return ImagePredictions(task.name, labels=np.stack([s.target for s in batch_of(images)]))

    def batch_of(images):
        index = next(i for i in range(len(samples)) if samples[i].image.shape == images[0].shape
                     and np.array_equal(samples[i].image, images[0]))
        return samples[index:index + len(images)]

    result = evaluate(task, Oracle(), samples)
    present = [v["mean"] for v in result["dice"].values() if v["mean"] is not None]
    assert present and all(abs(d - 1.0) < 1e-9 for d in present)
    assert "| Dice lv_blood_pool" in markdown_table(task, {"oracle": result})


def test_dice_and_hd95_on_a_known_shift():
    from cmrtrain.metrics import dice_per_class, hd95_per_class

    truth = np.zeros((50, 60), int)
    truth[10:30, 10:30] = 1
    shifted = np.roll(truth, 3, axis=0)  # 3 rows down
    assert dice_per_class(shifted, truth, 2)[0] == pytest.approx(2 * 17 * 20 / 800)
    assert hd95_per_class(shifted, truth, 2, (1.0, 1.0))[0] == pytest.approx(3.0)
    assert hd95_per_class(shifted, truth, 2, (2.0, 1.0))[0] == pytest.approx(6.0)  # rows are 2 mm apart
    assert np.isnan(hd95_per_class(shifted, np.zeros_like(truth), 2, (1.0, 1.0))[0])


def test_hd95_without_simpleitk_uses_scipy_and_agrees(monkeypatch):
    """A GPU image may lack SimpleITK: HD95 then comes from SciPy's exact transform, with
    the same distances (the anisotropic spacing included)."""
    pytest.importorskip("scipy")
    from cmrtrain import metrics

    rng = np.random.default_rng(0)
    edge = np.zeros((40, 50), bool)
    edge[rng.integers(0, 40, 25), rng.integers(0, 50, 25)] = True
    with_itk = metrics._distance_to(edge, (1.5, 0.8))
    monkeypatch.setitem(sys.modules, "SimpleITK", None)  # import now raises ImportError
    np.testing.assert_allclose(metrics._distance_to(edge, (1.5, 0.8)), with_itk, atol=1e-4)
