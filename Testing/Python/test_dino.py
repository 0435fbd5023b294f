"""DINO pretraining: loss, EMA, schedules, multi-crop views, the unlabeled image source,
and the training script end to end (a few CPU steps, resume, export)."""

import json
import logging

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import pretrain_dino
from CMRFoundationLib.dicom import read_study, write_mr_series
from CMRFoundationLib.models.vit import ViTEncoder, vit_config
from CMRFoundationLib.stack import SeriesInfo, geometry_matrix
from CMRFoundationLib.volume_io import write_volume
from CMRFoundationLib.weights import sha256_of
from cmrtrain.dino import (
    DINOHead,
    DINOLoss,
    MultiCropAugment,
    MultiCropWrapper,
    cancel_last_layer_gradients,
    cosine_schedule,
    param_groups,
    update_teacher,
)
from cmrtrain.unlabeled import PretrainTransform, UnlabeledImages
from conftest import REPO, SHARED_DATA

# Columns 1.2 mm apart, rows 1.6 mm apart, slices 8 mm: (row_mm, col_mm) = (1.6, 1.2).
GEOMETRY = geometry_matrix(np.zeros(3), [1, 0, 0], [0, 1, 0], np.array([1.2, 1.6, 8.0]))


@pytest.fixture(autouse=True)
def one_thread():
    """The test machine's cores are shared: one torch thread is much faster than several."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Unlabeled images of every supported kind, plus files that must be skipped."""
    root = tmp_path_factory.mktemp("unlabeled")
    rng = np.random.default_rng(0)
    (root / "acdc").mkdir()
    np.savez_compressed(root / "acdc" / "p1.npz", image=rng.random((3, 40, 36)).astype(np.float16),
                        label=np.zeros((3, 40, 36), np.uint8))
    np.savez_compressed(root / "acdc" / "p1_labels_only.npz", labels=np.zeros((3, 40, 36), np.uint8))
    (root / "acdc" / "patients.json").write_text("{}")
    np.savez_compressed(root / "lge.npz", image=rng.integers(0, 255, (2, 48, 48), dtype=np.uint8))
    write_volume(rng.random((2, 3, 32, 40)).astype(np.float32) * 500, np.diag([1.1, 1.3, 6.0, 1.0]),
                 root / "cine.nii.gz")
    write_mr_series(root / "study" / "cine", rng.integers(0, 1000, (2, 3, 24, 28)).astype(float), GEOMETRY,
                    SeriesInfo(series_number=1), frame_times=[0, 40, 80], uid_seed="dino-cine")
    write_mr_series(root / "study" / "enhanced", rng.integers(0, 1000, (2, 1, 24, 28)).astype(float), GEOMETRY,
                    SeriesInfo(series_number=2), enhanced=True, uid_seed="dino-enhanced")
    (root / "study" / "junk").mkdir()
    (root / "study" / "junk" / "blob").write_bytes(b"\x00\x01 not dicom" * 20)
    (root / "broken.nii.gz").write_bytes(b"not a nifti file")
    (root / "broken.npz").write_bytes(b"not a zip file")
    return root


# --- loss, EMA, schedules ----------------------------------------------------------------


def test_dino_loss_identical_outputs_is_finite_and_moves_the_centre():
    torch.manual_seed(0)
    out_dim, batch, n_crops = 32, 4, 4
    loss_fn = DINOLoss(out_dim, n_crops, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_epochs=3)
    teacher = torch.randn(2 * batch, out_dim)
    student = torch.cat([teacher, teacher])  # the 2 local crops repeat the global ones
    loss = loss_fn(student, teacher, epoch=0)
    assert torch.isfinite(loss) and loss.item() > 0
    # Centre: momentum 0.9 towards the batch mean, starting from zero.
    assert torch.allclose(loss_fn.center, 0.1 * teacher.mean(0, keepdim=True), atol=1e-6)
    assert "center" in loss_fn.state_dict()
    # Teacher temperature: linear warm-up over 3 epochs, then constant.
    assert [round(loss_fn.teacher_temperature(e), 4) for e in (0, 1, 2, 3, 10)] == [0.04, 0.055, 0.07, 0.07, 0.07]
    assert DINOLoss(out_dim, n_crops, warmup_epochs=1).teacher_temperature(0) == 0.04
    # A student that matches the teacher pays less than one that does not.
    random_student = torch.randn_like(student)
    assert loss_fn(student, teacher, 5).item() < DINOLoss(out_dim, n_crops)(random_student, teacher, 5).item()


def test_teacher_ema_update_formula():
    student, teacher = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in teacher.parameters()]
    update_teacher(student, teacher, 0.9)
    for t_old, t_new, s in zip(before, teacher.parameters(), student.parameters()):
        assert torch.allclose(t_new, 0.9 * t_old + 0.1 * s)


def test_cosine_schedule_warmup_then_cosine():
    values = cosine_schedule(1.0, 0.1, epochs=4, iters_per_epoch=5, warmup_epochs=1, start_warmup=0.0)
    assert len(values) == 20
    assert values[0] == 0.0 and values[4] < 1.0 and values[5] == pytest.approx(1.0)
    assert np.all(np.diff(values[5:]) <= 0) and values[-1] == pytest.approx(0.1, abs=0.01)
    momentum = cosine_schedule(0.996, 1.0, 2, 3)
    assert momentum[0] == pytest.approx(0.996) and np.all(np.diff(momentum) >= 0)


# --- model pieces --------------------------------------------------------------------------


def test_multicrop_views_shapes_and_range():
    torch.manual_seed(1)
    augment = MultiCropAugment(global_size=32, local_size=16, n_local=3)
    image = torch.rand(1, 48, 48) * 2 - 1
    views = augment(image)
    assert len(views) == augment.n_crops == 5
    assert [tuple(v.shape) for v in views] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 3
    for view in views:
        assert view.dtype == torch.float32 and torch.isfinite(view).all()
        assert view.min() >= -1.0 and view.max() <= 1.0
        assert torch.equal(view[0], view[1]) and torch.equal(view[0], view[2])  # grey repeated
    # A constant image stays constant up to intensity changes (no artefacts from the resampling).
    flat = augment(torch.full((48, 48), 0.2))
    assert all(v.std() < 0.2 for v in flat)
    with pytest.raises(ValueError, match="one grey image"):
        augment(torch.zeros(3, 48, 48))


def test_head_wrapper_and_parameter_groups():
    encoder = ViTEncoder(vit_config("vit_nano", image_size=32))
    head = DINOHead(encoder.dim, out_dim=64, hidden_dim=48, bottleneck_dim=16)
    model = MultiCropWrapper(encoder, head)
    crops = [torch.randn(2, 3, 32, 32)] * 2 + [torch.randn(2, 3, 16, 16)] * 3
    output = model(crops)
    assert output.shape == (5 * 2, 64)
    assert not head.last_layer.gain.requires_grad  # norm_last_layer: prototypes stay unit length
    # The last layer's outputs are cosine similarities: |output| <= 1.
    assert output.abs().max() <= 1.0 + 1e-5

    decay, no_decay = param_groups(model)
    no_decay_ids = {id(p) for p in no_decay["params"]}
    assert no_decay["weight_decay"] == 0.0
    for name in ("encoder.pos_embed", "encoder.cls_token", "encoder.norm.weight", "head.mlp.0.bias"):
        assert id(dict(model.named_parameters())[name]) in no_decay_ids
    assert id(head.mlp[0].weight) in {id(p) for p in decay["params"]}

    output.sum().backward()
    cancel_last_layer_gradients(model, epoch=0, freeze_epochs=1)
    assert head.last_layer.direction.grad is None and head.mlp[0].weight.grad is not None


# --- unlabeled images ------------------------------------------------------------------------


def test_unlabeled_images_from_mixed_sources(image_folder, caplog):
    with caplog.at_level(logging.WARNING, logger="cmrtrain.unlabeled"):
        dataset = UnlabeledImages([image_folder])
    # npz 3 + 2 slices, NIfTI 2 slices x 3 frames, DICOM cine 2 x 3, enhanced 2 x 1.
    assert len(dataset) == 3 + 2 + 6 + 6 + 2, dataset.describe()
    skipped = {path.split("/")[-1] for path, _ in dataset.skipped}
    assert {"broken.nii.gz", "broken.npz", "blob"} <= skipped
    assert not any("labels_only" in path or path.endswith(".json") for path, _ in dataset.skipped)
    assert "broken.npz" in caplog.text  # the log names the file

    by_kind = {}
    for i in range(len(dataset)):
        image, spacing = dataset[i]
        assert image.ndim == 2 and image.dtype == torch.float32 and torch.isfinite(image).all()
        source = dataset.sources[int(dataset._index[i][0])]
        by_kind.setdefault(source.kind, set()).add((tuple(image.shape), tuple(np.round(spacing.tolist(), 3))))
    assert by_kind["npz"] == {((40, 36), (1.5, 1.5)), ((48, 48), (1.5, 1.5))}
    assert by_kind["volume"] == {((32, 40), (1.3, 1.1))}  # (row_mm, col_mm)
    assert by_kind["dicom"] == {((24, 28), (1.6, 1.2))}

    # Pixel values come through unchanged: an npz image, and DICOM images read one file at a
    # time equal what the study reader loads (rescale applied, same slice/frame order).
    with np.load(image_folder / "acdc" / "p1.npz") as archive:
        first = archive["image"][0].astype(np.float32)
    npz_index = next(i for i in range(len(dataset)) if dataset.sources[dataset._index[i][0]].path.endswith("p1.npz"))
    assert np.array_equal(dataset[npz_index][0].numpy(), first)
    stacks, _ = read_study(image_folder / "study")
    expected = {stack.pixels[k, t].tobytes() for stack in stacks for k in range(stack.n_slices) for t in range(stack.n_frames)}
    dicom_items = [i for i in range(len(dataset)) if dataset.sources[dataset._index[i][0]].kind == "dicom"]
    assert len(expected) == len(dicom_items) == 8
    assert {dataset[i][0].numpy().tobytes() for i in dicom_items} == expected


def test_unlabeled_images_replace_a_file_broken_after_indexing(tmp_path, caplog):
    np.savez(tmp_path / "a.npz", image=np.zeros((2, 8, 8), np.float32))
    np.savez(tmp_path / "b.npz", image=np.ones((2, 8, 8), np.float32))
    dataset = UnlabeledImages([tmp_path])
    (tmp_path / "a.npz").write_bytes(b"overwritten")
    with caplog.at_level(logging.WARNING, logger="cmrtrain.unlabeled"):
        image, _ = dataset[0]
    assert image.sum() == 64  # the next readable image, from b.npz
    assert "a.npz: not an npz" in caplog.text
    only_b = UnlabeledImages([tmp_path / "b.npz"])
    (tmp_path / "b.npz").unlink()
    with pytest.raises(RuntimeError, match="none of the 1 sources"):
        only_b[1]


def test_pretrain_transform_gives_one_millimetre_views(image_folder):
    views = MultiCropAugment(global_size=32, local_size=16, n_local=2)
    dataset = UnlabeledImages([image_folder / "lge.npz"], transform=PretrainTransform(views, size=48))
    crops = dataset[0]
    assert [tuple(c.shape) for c in crops] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 2
    assert all(c.min() >= -1 and c.max() <= 1 for c in crops)


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="shared data (../shared/data) not available")
def test_unlabeled_images_index_the_shared_data_lazily():
    dataset = UnlabeledImages([SHARED_DATA])
    assert len(dataset) > 1000
    # The only file left out is the real scanner cine without geometry, named with its reason.
    assert all("dicom_samples" in path and "frames cannot be placed" in reason for path, reason in dataset.skipped)
    assert dataset._cache is None  # start-up read headers only
    image, spacing = dataset[len(dataset) - 1]
    assert image.ndim == 2 and spacing.tolist() == [1.5, 1.5]


# --- the training script ---------------------------------------------------------------------


def _tiny_config(tmp_path) -> str:
    config = json.loads((REPO / "Training" / "configs" / "dino_cpu_tiny.json").read_text())
    config.update(
        head={"out_dim": 64, "hidden_dim": 64, "bottleneck_dim": 16, "norm_last_layer": True},
        preprocess={"spacing_mm": 1.0, "size": 48, "percentile": 98.0},
        batch_size=4, workers=0, log_every=1, checkpoint_every_steps=2,
    )
    config["crops"].update(global_size=32, local_size=16)
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(config))
    return str(path)


def test_pretrain_script_runs_resumes_and_exports(image_folder, tmp_path):
    config = _tiny_config(tmp_path)
    out = tmp_path / "run"
    base = ["--config", config, "--data", str(image_folder), "--out", str(out), "--device", "cpu"]

    pretrain_dino.main(base + ["--max-steps", "3"])
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) and {"lr", "wd", "momentum", "teacher_temp"} <= set(r) for r in log)
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == 3

    # Without --resume an existing run is never overwritten; with other settings it cannot resume.
    with pytest.raises(SystemExit, match="--resume"):
        pretrain_dino.main(base + ["--max-steps", "5"])
    with pytest.raises(SystemExit, match="batch_size"):
        pretrain_dino.main(base + ["--max-steps", "5", "--resume", "--batch-size", "2"])

    # Resuming continues the step counter and the schedules.
    manifest = pretrain_dino.main(base + ["--max-steps", "5", "--resume"])
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5]
    assert log[3]["lr"] > log[2]["lr"]  # still warming up, not restarted
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 5

    # The export: the teacher's encoder, loadable strictly from its own manifest.
    written = json.loads((out / "encoder.json").read_text())
    assert written["steps"] == manifest["steps"] == 5 and written["method"] == "DINO"
    assert written["sha256"] == sha256_of(out / "encoder.safetensors")
    assert np.isfinite(written["final_loss"])
    encoder = ViTEncoder(vit_config(written["encoder"]))
    state = load_file(str(out / "encoder.safetensors"))
    encoder.load_state_dict(state, strict=True)
    teacher_state = torch.load(out / "checkpoint.pt", weights_only=True)["teacher"]
    assert torch.equal(state["pos_embed"], teacher_state["encoder.pos_embed"])
