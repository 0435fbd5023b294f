"""The method's pre-processing, and its exact inverse back to the native pixel grid.

Every network input is a 2D image resampled in-plane to 1 mm pixels, centre-cropped (or
padded) to 224 x 224, capped at its 98th intensity percentile and scaled to [-1, 1].
Every prediction (probabilities, logits, heatmaps, label maps, points) is mapped back to
the native pixel grid with the same transform, so results land on the image they came
from.

Conventions:

* Images are ``[..., rows, cols]``; points are ``[..., 2]`` as (row, col) in pixels.
  Spacing is given as (row_mm, col_mm): the distance between rows, then between
  columns. Note that ``ImageStack.spacing`` is (col, row, slice), the other way round.
* Pixel (r, c) of the native image has its centre at physical (r * row_mm, c * col_mm)
  from the centre of pixel (0, 0); the model grid likewise, at the model spacing.
* The mapping is affine per axis: ``native = scale * model + offset`` with
  ``scale = model_mm / native_mm``. The model grid is centred on the native image; its
  pixel 0 is put on a native pixel centre (``offset`` is a whole number of native
  pixels), which moves the centre by at most half a native pixel. The point of that:
  when the native spacing equals the model spacing, model pixels *are* native pixels, so
  the image is cropped or padded without any interpolation and a label map survives the
  round trip unchanged.
* Resampling is separable (one weight matrix per axis). It is bilinear when the target
  grid is as fine as the source or finer, and a triangle filter widened to the target
  pixel size (antialiasing) when it is coarser. Samples within half a pixel beyond the
  outermost pixel centres repeat the edge pixel; samples outside the source's pixel
  extent get a fill value.

Functions accept numpy arrays, and torch tensors where noted (returned as tensors on the
same device), so logits can be brought back without leaving the GPU.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

# Tolerance (in pixels) for deciding that a sample lies inside the source's pixel extent,
# so that rounding in the affine map does not drop the outermost half pixel.
_EDGE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class PreprocessConfig:
    """The pre-processing parameters; stored in each task's weights manifest."""

    spacing_mm: float = 1.0  # model pixel size, both axes
    size: int = 224  # model grid is size x size
    percentile: float = 98.0  # intensity cap

    def __post_init__(self) -> None:
        if not (math.isfinite(self.spacing_mm) and self.spacing_mm > 0):
            raise ValueError(f"PreprocessConfig: spacing_mm must be positive, got {self.spacing_mm!r}")
        if int(self.size) != self.size or self.size < 1:
            raise ValueError(f"PreprocessConfig: size must be a positive integer, got {self.size!r}")
        if not (0 < self.percentile <= 100):
            raise ValueError(f"PreprocessConfig: percentile must be in (0, 100], got {self.percentile!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PreprocessConfig":
        """The config stored by ``to_dict``; unknown keys are an error (a newer format)."""
        unknown = set(data) - {"spacing_mm", "size", "percentile"}
        if unknown:
            raise ValueError(f"PreprocessConfig: unknown keys {sorted(unknown)}")
        return cls(
            spacing_mm=float(data.get("spacing_mm", cls.spacing_mm)),
            size=int(data.get("size", cls.size)),
            percentile=float(data.get("percentile", cls.percentile)),
        )


@dataclass(frozen=True)
class GridTransform:
    """The map between one native pixel grid and the model grid (see module docstring)."""

    rows: int
    cols: int
    spacing_row: float  # native mm between rows
    spacing_col: float  # native mm between columns
    size: int = 224
    spacing_mm: float = 1.0

    def __post_init__(self) -> None:
        for name in ("rows", "cols", "size"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"GridTransform: {name} must be a positive integer, got {value!r}")
        for name in ("spacing_row", "spacing_col", "spacing_mm"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"GridTransform: {name} must be a positive number of mm, got {value!r}")

    @classmethod
    def for_image(
        cls, shape: Sequence[int], spacing: Sequence[float], config: PreprocessConfig = PreprocessConfig()
    ) -> "GridTransform":
        """The transform for an image whose last two dimensions are ``shape[-2:]``."""
        row_mm, col_mm = _check_spacing(spacing)
        return cls(int(shape[-2]), int(shape[-1]), row_mm, col_mm, config.size, config.spacing_mm)

    @property
    def scale(self) -> np.ndarray:
        """Native pixels per model pixel, per axis (row, col)."""
        return np.array([self.spacing_mm / self.spacing_row, self.spacing_mm / self.spacing_col])

    @property
    def offset(self) -> np.ndarray:
        """Native (row, col) of model pixel (0, 0): whole native pixels (see module docstring)."""
        native_centre = (np.array([self.rows, self.cols], dtype=float) - 1) / 2
        exact = native_centre - (self.size - 1) / 2 * self.scale
        return np.floor(exact + 0.5)

    # -- points ----------------------------------------------------------------------

    def native_to_model_points(self, points: Any) -> np.ndarray:
        """Native (row, col) pixel coordinates ``[..., 2]`` -> model grid coordinates."""
        points = _as_points(points)
        return (points - self.offset) / self.scale

    def model_to_native_points(self, points: Any) -> np.ndarray:
        """Model grid (row, col) coordinates ``[..., 2]`` -> native pixel coordinates."""
        points = _as_points(points)
        return points * self.scale + self.offset

    # -- images ------------------------------------------------------------------------

    def to_model(self, image: Any, fill: float | Sequence[float] = -1.0) -> Any:
        """Resample ``[..., rows, cols]`` onto the ``[..., size, size]`` model grid.

        ``fill`` (a value, or one per channel of ``[..., C, rows, cols]``) is what model
        pixels outside the native image get; the default -1 is the minimum of a
        normalised image, i.e. padding looks like background.
        """
        self._check_trailing(image, (self.rows, self.cols), "to_model")
        model_index = np.arange(self.size, dtype=float)
        row_pos = model_index * self.scale[0] + self.offset[0]
        col_pos = model_index * self.scale[1] + self.offset[1]
        return _resample(
            image,
            _weight_matrix(self.rows, row_pos, self.scale[0]),
            _weight_matrix(self.cols, col_pos, self.scale[1]),
            fill,
        )

    def to_native(self, model_output: Any, fill: float | Sequence[float] = 0.0) -> Any:
        """Resample model-grid channels ``[..., C, size, size]`` onto the native grid.

        For probabilities, logits or heatmaps. Native pixels outside the model's field of
        view get ``fill``: a value for all channels, or one per channel. For class
        probabilities pass ``fill=[1, 0, 0, ...]`` so that those pixels are background.
        """
        self._check_trailing(model_output, (self.size, self.size), "to_native")
        row_pos = (np.arange(self.rows, dtype=float) - self.offset[0]) / self.scale[0]
        col_pos = (np.arange(self.cols, dtype=float) - self.offset[1]) / self.scale[1]
        return _resample(
            model_output,
            _weight_matrix(self.size, row_pos, 1 / self.scale[0]),
            _weight_matrix(self.size, col_pos, 1 / self.scale[1]),
            fill,
        )

    def labels_to_model(self, labels: Any, fill: int = 0) -> np.ndarray:
        """Nearest-neighbour resampling of an integer label map ``[..., rows, cols]``.

        Model pixels outside the native image get ``fill`` (background).
        """
        labels = np.asarray(labels)
        self._check_trailing(labels, (self.rows, self.cols), "labels_to_model")
        model_index = np.arange(self.size, dtype=float)
        rows, row_in = _nearest(self.rows, model_index * self.scale[0] + self.offset[0])
        cols, col_in = _nearest(self.cols, model_index * self.scale[1] + self.offset[1])
        out = labels[..., rows[:, None], cols[None, :]]
        return np.where(row_in[:, None] & col_in[None, :], out, np.asarray(fill, dtype=labels.dtype))

    def labels_to_native(self, labels: Any, fill: int = 0) -> np.ndarray:
        """A model-grid label map ``[..., size, size]`` on the native grid ``[..., rows, cols]``.

        Each label's indicator image is resampled like probabilities (``to_native``) and
        every native pixel takes the label with the largest weight: boundaries follow
        the interpolated shape instead of the model grid's staircase. At equal spacing it
        reproduces the labels exactly. Pixels outside the field of view get ``fill``.
        """
        labels = np.asarray(labels)
        self._check_trailing(labels, (self.size, self.size), "labels_to_native")
        values = np.union1d(np.unique(labels), [fill]).astype(labels.dtype)
        indicators = (labels[..., None, :, :] == values[:, None, None]).astype(np.float32)
        weights = self.to_native(indicators, fill=(values == fill).astype(float).tolist())
        return values[np.argmax(weights, axis=-3)]

    def native_inside_mask(self) -> np.ndarray:
        """Boolean ``[rows, cols]``: native pixels inside the model's field of view."""
        row_pos = (np.arange(self.rows, dtype=float) - self.offset[0]) / self.scale[0]
        col_pos = (np.arange(self.cols, dtype=float) - self.offset[1]) / self.scale[1]
        return _inside(self.size, row_pos)[:, None] & _inside(self.size, col_pos)[None, :]

    def _check_trailing(self, array: Any, expected: tuple[int, int], what: str) -> None:
        shape = tuple(array.shape)
        if len(shape) < 2 or shape[-2:] != expected:
            raise ValueError(
                f"GridTransform.{what}: expected an array ending in {expected[0]} x {expected[1]}, got shape {shape}"
            )


def normalize_intensity(image: Any, percentile: float = 98.0) -> np.ndarray:
    """Cap at the ``percentile`` and scale [min, cap] to [-1, 1]; float32.

    ``[C, H, W]`` is one sample and ``[B, C, H, W]`` a batch: the minimum and the
    percentile are taken per sample over all of its channels, so the channels of one
    sample (e.g. three cine frames) keep their relative brightness. If more than
    ``100 - percentile`` % of the pixels share the minimum (the cap would equal it), the
    maximum is the cap instead; a constant sample becomes all -1.
    """
    if not (0 < percentile <= 100):
        raise ValueError(f"normalize_intensity: percentile must be in (0, 100], got {percentile!r}")
    image = _check_image(image, "normalize_intensity")
    flat = image.reshape(image.shape[0] if image.ndim == 4 else 1, -1).astype(np.float64)
    low = flat.min(axis=1)
    cap = np.percentile(flat, percentile, axis=1)
    cap = np.where(cap > low, cap, flat.max(axis=1))
    span = cap - low
    # Constant samples: span 0 -> divide by 1 so they come out as -1 without warnings.
    scaled = (np.clip(flat, low[:, None], cap[:, None]) - low[:, None]) / np.where(span > 0, span, 1.0)[:, None]
    return (2 * scaled - 1).astype(np.float32).reshape(image.shape)


def preprocess(
    image: Any, spacing: Sequence[float], config: PreprocessConfig = PreprocessConfig()
) -> tuple[np.ndarray, GridTransform]:
    """The network input for ``image`` ``[C, H, W]`` or ``[B, C, H, W]`` (one native grid).

    ``spacing`` is (row_mm, col_mm). Returns float32 ``[..., C, size, size]`` in [-1, 1]
    and the ``GridTransform`` that maps predictions back.

    Intensities are normalised first, in native space, then resampled: the percentile is
    then taken over the real pixels only (padding would otherwise add pixels at the
    minimum and shift it), and padding can be the normalised minimum, -1.
    """
    image = _check_image(image, "preprocess")
    transform = GridTransform.for_image(image.shape, spacing, config)
    normalised = normalize_intensity(image, config.percentile)
    return transform.to_model(normalised, fill=-1.0).astype(np.float32), transform


# -- helpers ----------------------------------------------------------------------------


def _check_image(image: Any, what: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim not in (3, 4):
        raise ValueError(f"{what}: expected an image [C, H, W] or a batch [B, C, H, W], got shape {image.shape}")
    if image.size == 0:
        raise ValueError(f"{what}: the image is empty (shape {image.shape})")
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == bool) or np.iscomplexobj(image):
        raise ValueError(f"{what}: expected real numbers, got dtype {image.dtype}")
    if not np.all(np.isfinite(image)):
        raise ValueError(f"{what}: the image contains NaN or infinite values")
    return image


def _check_spacing(spacing: Sequence[float]) -> tuple[float, float]:
    values = np.asarray(spacing, dtype=float).ravel()
    if values.shape != (2,) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"spacing must be two positive numbers of mm (row_mm, col_mm), got {spacing!r}")
    return float(values[0]), float(values[1])


def _as_points(points: Any) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim < 1 or points.shape[-1] != 2:
        raise ValueError(f"points must have shape [..., 2] as (row, col), got shape {points.shape}")
    return points


def _inside(n_in: int, positions: np.ndarray) -> np.ndarray:
    """Which positions (in source pixels) lie within the source's pixel extent."""
    return (positions >= -0.5 - _EDGE_TOLERANCE) & (positions <= n_in - 0.5 + _EDGE_TOLERANCE)


def _nearest(n_in: int, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest source index per position (ties round up) and whether it is inside."""
    index = np.clip(np.floor(positions + 0.5), 0, n_in - 1).astype(np.intp)
    return index, _inside(n_in, positions)


def _weight_matrix(n_in: int, positions: np.ndarray, step: float) -> np.ndarray:
    """``[len(positions), n_in]`` resampling weights along one axis.

    ``step`` is the spacing of the positions in source pixels: a triangle filter of
    half-width ``max(step, 1)`` (bilinear, widened when the target is coarser). Taps past
    the edge repeat the edge pixel; positions outside the pixel extent get a zero row.
    """
    width = max(step, 1.0)
    n_taps = int(math.ceil(2 * width)) + 1
    taps = np.floor(positions - width)[:, None] + 1 + np.arange(n_taps)  # covers (pos - width, pos + width)
    weights = np.maximum(0.0, 1.0 - np.abs(taps - positions[:, None]) / width)
    weights /= weights.sum(axis=1, keepdims=True)
    weights[~_inside(n_in, positions)] = 0.0
    matrix = np.zeros((len(positions), n_in))
    rows = np.broadcast_to(np.arange(len(positions))[:, None], taps.shape)
    np.add.at(matrix, (rows, np.clip(taps, 0, n_in - 1).astype(np.intp)), weights)
    return matrix


def _is_tensor(array: Any) -> bool:
    torch = sys.modules.get("torch")  # only imported if the caller uses torch already
    return torch is not None and isinstance(array, torch.Tensor)


def _resample(array: Any, row_weights: np.ndarray, col_weights: np.ndarray, fill: Any) -> Any:
    """``row_weights @ array @ col_weights.T`` over the last two axes, plus ``fill`` where
    the weights are all zero (outside the source)."""
    coverage = row_weights.sum(axis=1)[:, None] * col_weights.sum(axis=1)[None, :]
    fill = np.asarray(fill, dtype=np.float64)
    if fill.ndim > 1 or (fill.ndim == 1 and (array.ndim < 3 or len(fill) != array.shape[-3])):
        raise ValueError(
            f"fill must be one value or one per channel (shape [..., C, H, W] with C = {len(fill)}), "
            f"got an array of shape {tuple(array.shape)}"
        )
    background = fill[:, None, None] * (1 - coverage) if fill.ndim == 1 else fill * (1 - coverage)
    if _is_tensor(array):
        import torch

        dtype = array.dtype if array.dtype in (torch.float32, torch.float64) else torch.float32
        as_tensor = lambda a: torch.as_tensor(a, dtype=dtype, device=array.device)  # noqa: E731
        return as_tensor(row_weights) @ array.to(dtype) @ as_tensor(col_weights).T + as_tensor(background)
    array = np.asarray(array)
    dtype = array.dtype if np.issubdtype(array.dtype, np.floating) else np.float32
    out = row_weights @ array.astype(np.float64) @ col_weights.T + background
    return out.astype(dtype)
