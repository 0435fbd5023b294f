"""Hostile and damaged weights folders, built here: each one is refused with one WeightsError
naming the file and the reason, before anything is allocated or unpickled, and `cmrfm
predict` refuses it with one line and a non-zero exit, never a traceback.

Many cases play an attacker (or a careless publisher) who can write the folder: the file
is replaced, the manifest's SHA-256 updated to match and the manifest approved in the
folder's index (``_publish``), so the refusal must come from the checks behind the hashes.
"""

import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from CMRFoundationLib.cli import main as cmrfm
from CMRFoundationLib.models import architecture_of, build_model
from CMRFoundationLib.preprocess import PreprocessConfig
from CMRFoundationLib.tasks import TASKS
from CMRFoundationLib.weights import (
    INDEX_FILE,
    PIN_ENV_VAR,
    WeightsError,
    check_folder_approved,
    index_sha256,
    load_task_state,
    record_in_index,
    save_task_weights,
    sha256_of,
)

REPO = Path(__file__).resolve().parents[2]
SMALL = PreprocessConfig(spacing_mm=2.0, size=64)


@pytest.fixture(autouse=True)
def no_pickle(monkeypatch):
    """Any unpickling fails the test (the malicious pickle below also leaves a mark if run)."""

    def refuse(*args, **kwargs):
        raise AssertionError("weights must never be unpickled")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A genuine weights folder: small hybrid models of image_type and seg_lge, written by the library."""
    folder = tmp_path_factory.mktemp("genuine")
    for seed, task in enumerate(("image_type", "seg_lge")):
        torch.manual_seed(seed)
        model = build_model(task, "hybrid_nano")
        save_task_weights(folder, task, model.state_dict(), architecture=architecture_of(model),
                          preprocessing=SMALL, labels=TASKS[task].labels)
    return folder


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    """A small image for `cmrfm predict` to run on."""
    from CMRFoundationLib.volume_io import write_volume

    path = tmp_path_factory.mktemp("input") / "image.nii.gz"
    pixels = np.random.default_rng(0).uniform(0, 500, (2, 1, 48, 48)).astype(np.float32)
    write_volume(pixels, np.diag([1.5, 1.5, 8.0, 1.0]), path)
    return path


def _manifest(folder, task):
    return json.loads((folder / f"{task}.json").read_text())


def _write_manifest(folder, task, manifest):
    (folder / f"{task}.json").write_text(json.dumps(manifest, indent=1))


def _publish(folder, task):
    """What someone who can write the folder does after changing it: the manifest's hashes
    made to match its files, and the manifest approved in the index."""
    manifest = _manifest(folder, task)
    for entry in manifest["files"]:
        path = folder / entry["path"]
        entry["sha256"], entry["bytes"] = sha256_of(path), path.stat().st_size
    _write_manifest(folder, task, manifest)
    record_in_index(folder, f"{task}.json")


def _safetensors(header: dict, data: bytes = b"", length: int | None = None) -> bytes:
    text = json.dumps(header).encode()
    return (len(text) if length is None else length).to_bytes(8, "little") + text + data


def _edit(task, change, publish=True):
    """A case that edits the manifest of ``task`` with ``change(manifest)``."""

    def apply(folder):
        manifest = _manifest(folder, task)
        change(manifest)
        _write_manifest(folder, task, manifest)
        if publish:
            record_in_index(folder, f"{task}.json")

    return apply


def _replace(task, content, publish=True):
    """A case that replaces the weights file of ``task`` with ``content(folder)`` (bytes)."""

    def apply(folder):
        data = content(folder)
        path = folder / f"{task}.safetensors"
        path.unlink()
        path.write_bytes(data)
        if publish:
            _publish(folder, task)

    return apply


class _Mark:
    """Unpickling this creates the file it names: proof that something was unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _torch_pickle(folder):
    path = folder.parent / "torch_save.pt"
    torch.save({"head.linear.weight": torch.zeros(5, 48), "mark": _Mark(folder.parent / "UNPICKLED")}, path)
    return path.read_bytes()


def _raw_pickle(folder):
    return pickle.dumps(_Mark(folder.parent / "UNPICKLED"))


def _symlink_weights_to(target):
    def apply(folder):
        outside = folder.parent / "outside.safetensors"
        shutil.copy(folder / "image_type.safetensors", outside)  # the genuine bytes: the hash still matches
        (folder / "image_type.safetensors").unlink()
        (folder / "image_type.safetensors").symlink_to(outside if target is None else target)
        _publish(folder, "image_type")

    return apply


def _symlinked_manifest(folder):
    outside = folder.parent / "outside.json"
    shutil.copy(folder / "image_type.json", outside)
    (folder / "image_type.json").unlink()
    (folder / "image_type.json").symlink_to(outside)


def _symlinked_subfolder(folder):
    elsewhere = folder.parent / "elsewhere"
    elsewhere.mkdir()
    shutil.move(folder / "image_type.safetensors", elsewhere / "image_type.safetensors")
    (folder / "sub").symlink_to(elsewhere, target_is_directory=True)
    manifest = _manifest(folder, "image_type")
    manifest["files"][0]["path"] = "sub/image_type.safetensors"
    _write_manifest(folder, "image_type", manifest)
    _publish(folder, "image_type")


def _fifo(folder):
    (folder / "image_type.safetensors").unlink()
    os.mkfifo(folder / "image_type.safetensors")  # opening it to read would wait for a writer forever


def _sparse_8_gib(folder):
    path = folder / "image_type.safetensors"
    with open(path, "r+b") as handle:
        handle.truncate(8 << 30)  # no data blocks: 8 GiB that take no disk space
    manifest = _manifest(folder, "image_type")
    manifest["files"][0]["bytes"] = 8 << 30
    _write_manifest(folder, "image_type", manifest)
    record_in_index(folder, "image_type.json")  # the hash cannot be updated without reading 8 GiB


def _encoder_config(**values):
    def change(manifest):
        manifest["architecture"]["encoder"]["config"].update(values)

    return change


def _preprocessing(manifest):
    manifest["preprocessing"].update(spacing_mm=20.0, size=16)


def _unapproved(folder):
    index = json.loads((folder / INDEX_FILE).read_text())
    del index["files"]["image_type.json"]
    (folder / INDEX_FILE).write_text(json.dumps(index))


def _nested(folder):
    manifest = _manifest(folder, "image_type")
    manifest["architecture"]["head"]["features"] = "NESTED"
    nested = "[" * 100_000 + "]" * 100_000  # too deep for Python's JSON reader and for any walk over it
    (folder / "image_type.json").write_text(json.dumps(manifest).replace('"NESTED"', nested))
    record_in_index(folder, "image_type.json")


def _truncated(folder):
    return (folder / "image_type.safetensors").read_bytes()[:-1000]


# (case, its change, the task loaded, the file the message must name, the reason it must give)
CASES = [
    ("torch_save_pickle_renamed", _replace("image_type", _torch_pickle), "image_type", "image_type.safetensors",
     "not a safetensors file"),
    ("raw_pickle_renamed", _replace("image_type", _raw_pickle), "image_type", "image_type.safetensors",
     "not a safetensors file"),
    ("weights_symlink_outside", _symlink_weights_to(None), "image_type", "image_type.safetensors", "symbolic link"),
    ("weights_symlink_to_etc_passwd", _symlink_weights_to("/etc/passwd"), "image_type", "image_type.safetensors",
     "symbolic link"),
    ("manifest_symlink_outside", _symlinked_manifest, "image_type", "image_type.json", "symbolic link"),
    ("symlinked_subfolder", _symlinked_subfolder, "image_type", "image_type.safetensors",
     "outside the weights folder"),
    ("fifo", _fifo, "image_type", "image_type.safetensors", "not a regular file"),
    ("huge_shape", _replace("image_type", lambda f: _safetensors(
        {"head.linear.weight": {"dtype": "F32", "shape": [1 << 31, 1 << 31], "data_offsets": [0, 16]}}, bytes(16))),
     "image_type", "image_type.safetensors", "needs 18,446,744,073,709,551,616 bytes"),
    ("offsets_past_the_end", _replace("image_type", lambda f: _safetensors(
        {"head.linear.weight": {"dtype": "F32", "shape": [5, 48], "data_offsets": [0, 960 + (1 << 40)]}}, bytes(960))),
     "image_type", "image_type.safetensors", "outside the file's 960 bytes"),
    ("header_length_2_63", _replace("image_type", lambda f: _safetensors({}, bytes(64), length=1 << 63)),
     "image_type", "image_type.safetensors", r"not a safetensors file \(it would have a 9,223,372,036,854,775,808-byte"),
    ("header_not_json", _replace("image_type", lambda f: _safetensors({}, length=4) + b"\xff\xfe{["),
     "image_type", "image_type.safetensors", "header is not a JSON object"),
    ("unknown_dtype", _replace("image_type", lambda f: _safetensors(
        {"head.linear.bias": {"dtype": "F8_E4M3", "shape": [5], "data_offsets": [0, 5]}}, bytes(5))),
     "image_type", "image_type.safetensors", "dtype 'F8_E4M3'"),
    ("truncated", _replace("image_type", _truncated), "image_type", "image_type.safetensors", "offsets|end at"),
    ("sparse_8_gib", _sparse_8_gib, "image_type", "image_type.safetensors",
     "8,589,934,592 bytes, more than the .* can take; it was not read"),
    ("architecture_dim_4096_depth_48", _edit("image_type", _encoder_config(dim=4096, depth=48, heads=32)),
     "image_type", "image_type.json", "dim = 4096 is out of bounds"),
    ("architecture_dim_65536", _edit("image_type", _encoder_config(dim=65536)), "image_type", "image_type.json",
     "dim = 65536 is out of bounds"),
    ("architecture_billions_of_parameters", _edit("image_type", _encoder_config(dim=2048, depth=48, heads=32)),
     "image_type", "image_type.json", "parameters, more than"),
    ("architecture_nested_deeply", _nested, "image_type", "image_type.json", "not valid JSON|nested too deeply"),
    ("seg_lge_weights_as_image_type", _replace("image_type", lambda f: (f / "seg_lge.safetensors").read_bytes()),
     "image_type", "image_type.safetensors", "is not part of the model that image_type.json describes"),
    ("preprocessing_edited", _edit("seg_lge", _preprocessing, publish=False), "seg_lge", "seg_lge.json",
     "modified after the weights were approved.*cmrfm weights approve"),
    ("preprocessing_edited_and_approved", _edit("seg_lge", _preprocessing), "seg_lge", "seg_lge.json",
     "pre-processing to 20 mm pixels on a 16 px grid is outside"),
    ("labels_renamed", _edit("seg_lge", lambda m: m.update(labels=["background", "lv_myocardium", "lv_blood_pool"])),
     "seg_lge", "seg_lge.json", "labels .* are not those of task 'seg_lge'"),
    ("manifest_not_in_index", _unapproved, "image_type", "image_type.json", "not in the folder's index"),
    ("no_index", lambda folder: (folder / INDEX_FILE).unlink(), "image_type", INDEX_FILE,
     "has no weights index .*cmrfm weights approve"),
    ("huge_manifest", lambda f: (f / "image_type.json").write_bytes(b" " * (5 << 20)), "image_type",
     "image_type.json", "more than a weights manifest can be"),
]


@pytest.fixture(params=CASES, ids=[case[0] for case in CASES])
def hostile(request, base, tmp_path):
    """(folder, task, file named, reason) of one hostile case, built in a copy of the genuine folder."""
    name, apply, task, named, reason = request.param
    if name == "fifo" and not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    folder = tmp_path / "weights"
    shutil.copytree(base, folder)
    try:
        apply(folder)
    except OSError as error:  # a file system without sparse files
        pytest.skip(f"cannot build the case here: {error}")
    return folder, task, named, reason


def test_the_genuine_folder_loads_and_predicts(base, volume, tmp_path, capsys):
    """The control: the checks refuse the cases below, not everything."""
    for task in ("image_type", "seg_lge"):
        state, _ = load_task_state(base, task)
        assert state
    assert cmrfm(["predict", "image_type", str(volume), str(tmp_path / "out"), "--weights", str(base),
                  "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "out" / "image_type.json").read_text())["stacks"]


def test_the_library_refuses_with_the_file_and_the_reason(hostile):
    folder, task, named, reason = hostile
    start = time.perf_counter()
    with pytest.raises(WeightsError, match=reason) as error:
        load_task_state(folder, task)
    assert named in str(error.value)
    assert time.perf_counter() - start < 10  # refused up front, not after reading gigabytes
    assert not (folder.parent / "UNPICKLED").exists()


def test_cmrfm_predict_refuses_with_one_line(hostile, volume, capsys):
    folder, task, named, reason = hostile
    out = folder.parent / "out"
    assert cmrfm(["predict", task, str(volume), str(out), "--weights", str(folder), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and named in err, err
    assert not out.exists()  # nothing was written
    assert not (folder.parent / "UNPICKLED").exists()


@pytest.mark.parametrize("case", ["raw_pickle_renamed", "header_length_2_63", "weights_symlink_to_etc_passwd",
                                  "architecture_dim_65536"])
def test_the_cmrfm_process_prints_no_traceback(case, base, volume, tmp_path):
    _, apply, task, named, _ = next(c for c in CASES if c[0] == case)
    folder = tmp_path / "weights"
    shutil.copytree(base, folder)
    apply(folder)
    done = subprocess.run([sys.executable, "-m", "CMRFoundationLib.cli", "predict", task, str(volume),
                           str(tmp_path / "out"), "--weights", str(folder), "--device", "cpu"],
                          capture_output=True, text=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and named in done.stderr, done.stderr
    assert not (tmp_path / "UNPICKLED").exists()


def test_an_edited_manifest_loads_once_its_owner_approves_it(base, tmp_path, capsys):
    folder = tmp_path / "weights"
    shutil.copytree(base, folder)
    _edit("seg_lge", lambda m: m["preprocessing"].update(spacing_mm=1.5), publish=False)(folder)
    with pytest.raises(WeightsError, match="seg_lge.json was modified"):
        load_task_state(folder, "seg_lge")

    assert cmrfm(["weights", "approve", str(folder)]) == 0
    assert index_sha256(folder) in capsys.readouterr().out
    _, manifest = load_task_state(folder, "seg_lge")
    assert manifest["preprocessing"]["spacing_mm"] == 1.5
    assert cmrfm(["weights", "check", str(folder)]) == 0
    assert "seg_lge: ok" in capsys.readouterr().out


def test_approving_a_damaged_folder_changes_nothing(base, tmp_path, capsys):
    folder = tmp_path / "weights"
    shutil.copytree(base, folder)
    with open(folder / "image_type.safetensors", "r+b") as handle:  # one flipped bit in the tensor data
        handle.seek(-3, 2)
        last = handle.read(1)
        handle.seek(-3, 2)
        handle.write(bytes([last[0] ^ 1]))
    index = (folder / INDEX_FILE).read_bytes()
    assert cmrfm(["weights", "approve", str(folder)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "image_type.safetensors does not match" in err, err
    assert (folder / INDEX_FILE).read_bytes() == index
    assert cmrfm(["weights", "check", str(folder)]) == 1
    assert "image_type: refused" in capsys.readouterr().out


def test_a_pinned_site_accepts_no_other_weights(base, tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    shutil.copytree(base, folder)
    monkeypatch.setenv(PIN_ENV_VAR, index_sha256(folder))
    load_task_state(folder, "image_type")
    # Someone who can write the folder re-approves their own edit: the pin still refuses it.
    _edit("image_type", lambda m: m["preprocessing"].update(spacing_mm=1.0))(folder)
    with pytest.raises(WeightsError, match=f"{INDEX_FILE}: its SHA-256 .* is not the one pinned in {PIN_ENV_VAR}"):
        load_task_state(folder, "image_type")


def test_an_edited_phenotype_classifier_is_refused(tmp_path):
    from CMRFoundationLib.models.phenotype_classifier import FILE_NAME, PhenotypeClassifier
    from CMRFoundationLib.weights import DEFAULT_WEIGHTS_DIR

    folder = tmp_path / "weights"
    shutil.copytree(DEFAULT_WEIGHTS_DIR, folder)
    assert PhenotypeClassifier.load(folder).classes
    data = json.loads((folder / FILE_NAME).read_text())
    data["intercept"][0] += 5.0  # a different diagnosis for everyone
    (folder / FILE_NAME).write_text(json.dumps(data))
    with pytest.raises(WeightsError, match=f"{FILE_NAME} was modified"):
        PhenotypeClassifier.load(folder)
    with pytest.raises(WeightsError, match=f"{FILE_NAME} was modified"):
        check_folder_approved(folder)


def test_cmrfm_analyze_refuses_a_tampered_folder_before_the_work(base, tmp_path, monkeypatch, capsys):
    import CMRFoundationLib.analysis as analysis

    def never(*args, **kwargs):
        raise AssertionError("the analysis must not start with refused weights")

    monkeypatch.setattr(analysis, "analyze_study", never)
    folder = tmp_path / "weights"
    shutil.copytree(base, folder)
    _edit("seg_lge", _preprocessing, publish=False)(folder)
    assert cmrfm(["analyze", str(tmp_path), "--out", str(tmp_path / "out"), "--weights", str(folder)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "seg_lge.json was modified" in err, err


def test_cmrfm_batch_refuses_a_tampered_folder_before_any_study(base, tmp_path, monkeypatch, capsys):
    """A cohort run would otherwise analyse every study without the refused model."""
    from CMRFoundationLib.cohort import study as cohort_study

    def never(*args, **kwargs):
        raise AssertionError("no study may start with refused weights")

    monkeypatch.setattr(cohort_study, "analyze_study", never)
    (tmp_path / "studies" / "a").mkdir(parents=True)
    folder = tmp_path / "weights"
    shutil.copytree(base, folder)
    _edit("seg_lge", _preprocessing, publish=False)(folder)
    assert cmrfm(["batch", str(tmp_path / "studies"), str(tmp_path / "out"), "--weights", str(folder),
                  "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "seg_lge.json was modified" in err, err
