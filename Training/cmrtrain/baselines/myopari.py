"""myopari's ONNX segmentation models (Tiramisu, ACDC and EMIDEC) as an evaluation baseline.

The PyPI package ``myopari`` (MIT) ships two ONNX models in ``myopari/Resources``:
``tiramisu_acdc_fp32.onnx`` (0 background, 1 RV, 2 myocardium, 3 LV) and
``tiramisu_emidec_fp32.onnx`` (0 background, 1 cavity, 2 myocardium, 3 infarct, 4 MVO).
The package itself depends on napari and onnxruntime-gpu, so it is not installed: only
its ``.onnx`` files are used, found by :func:`find_myopari_models`, and the pre- and
post-processing around them is re-implemented here after reading myopari 0.1.6
(``processors/functions_utils.py`` and ``SEGProcessor.py``). Steps reproduced, in order:

1. Slice orientation: myopari's napari widget transposes the ITK-ordered (z, y, x) volume
   to (x, y, z), so the network sees each slice as [column, row]. Our volumes are
   [slices, rows, cols], so by default each slice is transposed on the way in and back on
   the way out (``transpose=False`` skips this for slices already stored as [x, y], as
   nibabel reads NIfTI: the EMIDEC PNG repack in ../shared/data scores higher that way,
   the ACDC repack, in ITK order, with the default).
2. Intensity: percentiles 0.05 and 99.05 of the voxels > 0 of the whole volume, clip to
   them, min-max scale to 0..1.
3. Crop to the bounding box of the non-zero voxels of the scaled volume (slices too:
   slices outside it get label 0), then centre-crop in-plane to a square of the shorter
   side and resize that square to 256 x 256, bilinearly.
4. Per-slice inference in batches, argmax over the classes.
5. Connected components (face connectivity, in 3D over the 256-grid stack) smaller than
   800 voxels (ACDC) or 500 voxels (EMIDEC) are removed.
6. EMIDEC only: when infarct + MVO make up < 2.5 % of the myocardium (2 + 3 + 4) they
   become myocardium.
7. Nearest-neighbour resize back to the square's size, pasted into a zero mask of the
   input's shape.

Differences from myopari (scikit-image and SciPy are not in our environment):
resizing uses ``torch.nn.functional.interpolate`` (bilinear with half-pixel centres, edge
values clamped where scikit-image mirrors; when the square is larger than 256, torch's
antialias filter stands in for scikit-image's Gaussian pre-filter) and "nearest-exact"
for masks (differs from scikit-image's rounding only at exact ties); connected components
come from SimpleITK. Its "myocardium only" option (off by default) is not reproduced.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from CMRFoundationLib.measurements.masks import label_components

MODEL_FILES = {"acdc": "tiramisu_acdc_fp32.onnx", "emidec": "tiramisu_emidec_fp32.onnx"}
NATIVE_LABELS = {
    "acdc": ("background", "rv_blood_pool", "lv_myocardium", "lv_blood_pool"),
    "emidec": ("background", "lv_cavity", "lv_myocardium", "infarct", "mvo"),
}
# myopari's defaults: components below this many voxels (on the 256 grid) are dropped.
MIN_COMPONENT_SIZE = {"acdc": 800, "emidec": 500}
INPUT_SIZE = 256
INTENSITY_PERCENTILES = (0.05, 99.05)
# EMIDEC: infarct (+MVO) below this fraction of the myocardium is called noise by myopari.
MIN_INFARCT_FRACTION = 0.025

# Our task -> (myopari model, lookup table from its native labels to the task's labels).
TASK_MODELS = {
    # ours: 0 background, 1 LV blood pool, 2 LV myocardium, 3 RV blood pool
    "seg_sax_cine": ("acdc", np.array([0, 3, 2, 1], dtype=np.uint8)),
    # ours: 0 background, 1 LV blood pool, 2 LV myocardium (infarct and MVO are myocardium)
    "seg_lge": ("emidec", np.array([0, 1, 2, 2, 2], dtype=np.uint8)),
}

ENV_VAR = "MYOPARI_RESOURCES"


class MyopariNotFoundError(FileNotFoundError):
    """myopari's ONNX files could not be found."""


def _how_to_get() -> str:
    return (
        "get them with `pip download myopari --no-deps -d DIR` and unzip the wheel "
        "(or pass the .whl / its folder), or set the environment variable "
        f"{ENV_VAR} to the unpacked myopari/Resources folder"
    )


def _has_models(folder: Path) -> bool:
    return all((folder / name).is_file() for name in MODEL_FILES.values())


def _extract_wheel(wheel: Path) -> Path:
    """The Resources folder of a myopari wheel, unpacked once into the temp folder."""
    target = Path(tempfile.gettempdir()) / f"cmrfoundation-{wheel.stem}"
    resources = target / "myopari" / "Resources"
    if _has_models(resources):
        return resources
    try:
        with zipfile.ZipFile(wheel) as archive:
            members = [n for n in archive.namelist() if n.startswith("myopari/Resources/")]
            if not members:
                raise MyopariNotFoundError(f"{wheel}: this wheel holds no myopari/Resources folder")
            archive.extractall(target, members=members)
    except zipfile.BadZipFile as error:
        raise MyopariNotFoundError(f"{wheel}: not a readable wheel ({error})") from error
    return resources


def _resources_at(location: Path) -> Path | None:
    """The Resources folder at ``location`` (itself, a package, a site folder or a wheel), if any."""
    if location.is_file() and location.suffix == ".whl":
        return _extract_wheel(location)
    if not location.is_dir():
        return None
    for folder in (location, location / "Resources", location / "myopari" / "Resources"):
        if _has_models(folder):
            return folder
    wheels = sorted(location.glob("myopari-*.whl"))
    return _extract_wheel(wheels[-1]) if wheels else None


def find_myopari_models(search: str | Path | None = None) -> Path:
    """The ``myopari/Resources`` folder holding both of myopari's ONNX models.

    Looked for, in order: at ``search`` (the Resources folder, an unpacked myopari package
    or wheel, a ``myopari-*.whl`` file or the folder ``pip download`` put it in), at
    ``$MYOPARI_RESOURCES`` (same forms), then in an installed ``myopari`` package (located
    without importing it, which would pull in napari). A wheel's Resources are unpacked
    into the temp folder. Raises :class:`MyopariNotFoundError` saying how to get them.
    """
    if search is not None:
        found = _resources_at(Path(search).expanduser())
        if found is None:
            raise MyopariNotFoundError(f"no myopari ONNX models ({', '.join(MODEL_FILES.values())}) at {search}; "
                                       + _how_to_get())
        return found
    if os.environ.get(ENV_VAR):
        found = _resources_at(Path(os.environ[ENV_VAR]).expanduser())
        if found is None:
            raise MyopariNotFoundError(f"{ENV_VAR}={os.environ[ENV_VAR]} holds no myopari ONNX models; "
                                       + _how_to_get())
        return found
    try:
        spec = importlib.util.find_spec("myopari")
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec else []:
        found = _resources_at(Path(location))
        if found is not None:
            return found
    raise MyopariNotFoundError("myopari's ONNX models were not found (no search path given, "
                               f"{ENV_VAR} unset, no installed myopari package); " + _how_to_get())


def _normalize(volume: np.ndarray) -> np.ndarray:
    """Clip to the 0.05/99.05 percentiles of the positive voxels, scale to 0..1 (float64)."""
    volume = np.asarray(volume, dtype=np.float64)
    positive = volume[volume > 0]
    if positive.size == 0:
        raise ValueError("volume has no positive voxels: nothing to segment")
    low, high = np.percentile(positive, INTENSITY_PERCENTILES)
    if high <= low:
        raise ValueError(f"volume intensities are constant ({low}) over its positive voxels: nothing to segment")
    return (np.clip(volume, low, high) - low) / (high - low)


def _square_crop(volume: np.ndarray) -> tuple[slice, slice, slice]:
    """myopari's crop: the non-zero bounding box, then a centred square of its shorter side."""
    nonzero = np.nonzero(volume)
    lower = [int(axis.min()) for axis in nonzero]
    upper = [int(axis.max()) + 1 for axis in nonzero]
    rows, cols = upper[1] - lower[1], upper[2] - lower[2]
    side = min(rows, cols)
    row0 = lower[1] + (rows - side) // 2
    col0 = lower[2] + (cols - side) // 2
    return slice(lower[0], upper[0]), slice(row0, row0 + side), slice(col0, col0 + side)


def _resize(stack: torch.Tensor, size: int, labels: bool) -> torch.Tensor:
    """[N, H, W] to [N, size, size]: bilinear for images, nearest for label maps."""
    batch = stack[:, None]
    if labels:
        return F.interpolate(batch.float(), size=(size, size), mode="nearest-exact")[:, 0].to(stack.dtype)
    downsampling = stack.shape[-1] > size
    return F.interpolate(batch, size=(size, size), mode="bilinear", align_corners=False, antialias=downsampling)[:, 0]


def _remove_small_components(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Zero the face-connected 3D components of the foreground smaller than ``min_size`` voxels."""
    components = label_components(labels > 0, fully_connected=False)
    keep = np.bincount(components.ravel()) >= min_size
    keep[0] = False
    return np.where(keep[components], labels, 0).astype(labels.dtype)


class MyopariSegmenter:
    """One of myopari's ONNX models with myopari's pre- and post-processing, on onnxruntime's CPU."""

    def __init__(self, model: str, resources: str | Path | None = None, batch_size: int = 8,
                 transpose: bool = True) -> None:
        """``model`` "acdc" or "emidec"; ``resources`` as for :func:`find_myopari_models`;
        ``transpose`` whether slices come as [rows, cols] (DICOM / ITK order, myopari's widget)."""
        if model not in MODEL_FILES:
            raise ValueError(f"unknown myopari model {model!r}; choose one of: {', '.join(MODEL_FILES)}")
        import onnxruntime as ort  # only the baselines need it

        self.model = model
        self.batch_size = batch_size
        self.transpose = transpose
        self.path = find_myopari_models(resources) / MODEL_FILES[model]
        self.session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        self.n_classes = len(NATIVE_LABELS[model])
        self._check_signature()

    def _check_signature(self) -> None:
        """The network must take float [N, 1, 256, 256] and give [N, classes, 256, 256]."""
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise ValueError(f"{self.path}: expected one input and an output, found {len(inputs)} / {len(outputs)}")
        expected = {"input": (inputs[0], [1, INPUT_SIZE, INPUT_SIZE], "tensor(float)"),
                    "output": (outputs[0], [self.n_classes, INPUT_SIZE, INPUT_SIZE], "tensor(float)")}
        for role, (arg, shape, dtype) in expected.items():
            fixed = [d if isinstance(d, int) else None for d in arg.shape[1:]]
            if arg.type != dtype or len(fixed) != 3 or any(f is not None and f != s for f, s in zip(fixed, shape)):
                raise ValueError(f"{self.path}: {role} {arg.name!r} is {arg.type} {arg.shape}, "
                                 f"expected {dtype} [N, {', '.join(map(str, shape))}]")
        self._input_name = inputs[0].name

    def _predict(self, images: np.ndarray) -> np.ndarray:
        """Argmax labels uint8 [N, 256, 256] of float32 images [N, 256, 256], in batches."""
        labels = np.empty(images.shape, dtype=np.uint8)
        for start in range(0, len(images), self.batch_size):
            batch = np.ascontiguousarray(images[start:start + self.batch_size, None], dtype=np.float32)
            scores = self.session.run(None, {self._input_name: batch})[0]
            labels[start:start + self.batch_size] = scores.argmax(axis=1)
        return labels

    def segment(self, volume: np.ndarray) -> np.ndarray:
        """uint8 labels [slices, H, W] in the model's native classes (``NATIVE_LABELS``).

        ``volume`` is one short-axis stack [slices, H, W] of raw intensities, H, W being rows,
        cols in DICOM order unless ``transpose`` is off; its slices are normalised and
        cleaned together (components are 3D), as myopari does, so pass one case at a time.
        """
        volume = np.asarray(volume)
        if volume.ndim != 3 or min(volume.shape) == 0:
            raise ValueError(f"expected a volume [slices, H, W], got shape {volume.shape}")
        # The network sees slices as [column, row] (see the module docstring, step 1).
        scaled = _normalize(volume)
        if self.transpose:
            scaled = scaled.transpose(0, 2, 1)
        crop = _square_crop(scaled)
        side = crop[1].stop - crop[1].start
        images = _resize(torch.from_numpy(np.ascontiguousarray(scaled[crop])), INPUT_SIZE, labels=False)
        labels = _remove_small_components(self._predict(images.numpy()), MIN_COMPONENT_SIZE[self.model])
        if self.model == "emidec":
            myocardium = np.count_nonzero(labels >= 2)
            if myocardium and np.count_nonzero(labels >= 3) / myocardium < MIN_INFARCT_FRACTION:
                labels[labels >= 3] = 2
        restored = np.zeros(scaled.shape, dtype=np.uint8)
        restored[crop] = _resize(torch.from_numpy(labels), side, labels=True).numpy()
        return np.ascontiguousarray(restored.transpose(0, 2, 1)) if self.transpose else restored

    def segment_for_task(self, volume: np.ndarray, task_name: str) -> np.ndarray:
        """uint8 labels [slices, H, W] in the classes of our task ``seg_sax_cine`` or ``seg_lge``."""
        if task_name not in TASK_MODELS:
            raise ValueError(f"myopari has no model for task {task_name!r}; it serves: {', '.join(TASK_MODELS)}")
        model, table = TASK_MODELS[task_name]
        if model != self.model:
            raise ValueError(f"task {task_name!r} needs myopari's {model!r} model, this segmenter runs {self.model!r}")
        return table[self.segment(volume)]
