"""Pre-processing and its inverse: exact point and label round trips, intensities, errors."""

import numpy as np
import pytest
import torch

from CMRFoundationLib.preprocess import (
    GridTransform,
    PreprocessConfig,
    normalize_intensity,
    preprocess,
)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _phantom_labels(rows: int, cols: int, spacing: float) -> np.ndarray:
    """Nested discs (bg 0, myocardium 2, blood 1) and an RV blob 3, sized in mm."""
    r, c = np.mgrid[:rows, :cols] * spacing
    centre_r, centre_c = rows * spacing / 2, cols * spacing / 2
    radius = np.hypot(r - centre_r, c - centre_c)
    labels = np.zeros((rows, cols), dtype=np.uint8)
    labels[radius < 35] = 2
    labels[radius < 25] = 1
    labels[np.hypot(r - centre_r, c - centre_c + 50) < 18] = 3
    return labels


@pytest.mark.parametrize(
    "rows, cols, spacing, size",
    [
        (200, 180, (1.0, 1.0), 224),
        (256, 256, (1.4, 1.4), 224),
        (101, 77, (0.73, 1.9), 224),
        (64, 65, (2.5, 0.6), 33),
        (300, 280, (0.625, 0.625), 225),
    ],
)
def test_point_round_trip_is_exact(rows, cols, spacing, size):
    transform = GridTransform.for_image((rows, cols), spacing, PreprocessConfig(size=size))
    points = np.random.default_rng(0).uniform(-20, 300, size=(5, 7, 2))
    there = transform.native_to_model_points(points)
    np.testing.assert_allclose(transform.model_to_native_points(there), points, rtol=0, atol=1e-9)
    np.testing.assert_allclose(transform.native_to_model_points(transform.model_to_native_points(points)), points, atol=1e-9)
    # Physical distances: one model pixel is spacing_mm in both axes.
    step = transform.model_to_native_points([[1.0, 1.0]]) - transform.model_to_native_points([[0.0, 0.0]])
    np.testing.assert_allclose(step[0] * np.array(spacing), [1.0, 1.0])


def test_model_grid_is_centred_on_the_image():
    transform = GridTransform(rows=151, cols=120, spacing_row=0.8, spacing_col=1.3)
    centre_native = transform.model_to_native_points([(224 - 1) / 2, (224 - 1) / 2])
    # Centred to within half a native pixel (pixel 0 sits on a native pixel centre).
    assert np.all(np.abs(centre_native - [(151 - 1) / 2, (120 - 1) / 2]) <= 0.5)
    assert np.all(transform.offset == np.round(transform.offset))


def test_equal_spacing_is_a_pure_crop_or_pad():
    image = np.random.default_rng(1).normal(size=(2, 200, 250)).astype(np.float32)
    transform = GridTransform.for_image(image.shape, (1.0, 1.0))
    model = transform.to_model(image, fill=-5.0)
    row0, col0 = transform.offset.astype(int)  # (-12, 13): rows padded, columns cropped
    assert (row0, col0) == (-12, 13)
    np.testing.assert_allclose(model[:, 12:212, :], image[:, :, 13:237], atol=1e-6)
    assert np.all(model[:, :12] == -5.0) and np.all(model[:, 212:] == -5.0)


@pytest.mark.parametrize("rows, cols", [(200, 180), (201, 179), (224, 224)])
def test_label_round_trip_exact_at_model_spacing(rows, cols):
    labels = _phantom_labels(rows, cols, 1.0)
    transform = GridTransform.for_image(labels.shape, (1.0, 1.0))
    model = transform.labels_to_model(labels)
    assert model.shape == (224, 224) and model.dtype == labels.dtype
    back = transform.labels_to_native(model)
    assert back.dtype == labels.dtype
    np.testing.assert_array_equal(back, labels)


@pytest.mark.parametrize("spacing", [(1.4, 1.4), (1.25, 1.6)])
def test_label_round_trip_close_at_other_spacing(spacing):
    labels = _phantom_labels(150, 140, min(spacing))
    transform = GridTransform.for_image(labels.shape, spacing)
    back = transform.labels_to_native(transform.labels_to_model(labels))
    for value in (0, 1, 2, 3):
        assert _dice(back == value, labels == value) > 0.97, value


def test_outside_field_of_view_gets_fill():
    # 300 x 300 at 1 mm: the 224 crop leaves a 38-pixel border outside.
    transform = GridTransform(300, 300, 1.0, 1.0)
    probabilities = np.zeros((3, 224, 224), dtype=np.float32)
    probabilities[1] = 1.0  # the model says class 1 everywhere it sees
    native = transform.to_native(probabilities, fill=[1.0, 0.0, 0.0])
    inside = transform.native_inside_mask()
    assert inside.sum() == 224 * 224
    np.testing.assert_allclose(native[1][inside], 1.0)
    np.testing.assert_allclose(native[0][~inside], 1.0)
    np.testing.assert_allclose(native.sum(axis=0), 1.0, atol=1e-6)
    labels = transform.labels_to_native(np.full((224, 224), 2))
    assert np.all(labels[inside] == 2) and np.all(labels[~inside] == 0)


def test_gaussian_blob_centre_is_preserved():
    rows, cols, spacing = 150, 170, (1.3, 0.9)
    centre = np.array([70.3, 90.7])
    r, c = np.mgrid[:rows, :cols]
    blob = np.exp(-(((r - centre[0]) * spacing[0]) ** 2 + ((c - centre[1]) * spacing[1]) ** 2) / (2 * 5.0**2))
    transform = GridTransform.for_image(blob.shape, spacing)

    model = transform.to_model(blob[None], fill=0.0)[0]
    mr, mc = np.mgrid[:224, :224]
    model_centre = np.array([(model * mr).sum(), (model * mc).sum()]) / model.sum()
    np.testing.assert_allclose(transform.model_to_native_points(model_centre), centre, atol=0.02)

    native = transform.to_native(model[None])[0]
    native_centre = np.array([(native * r).sum(), (native * c).sum()]) / native.sum()
    np.testing.assert_allclose(native_centre, centre, atol=0.02)
    assert np.abs(native - blob).max() < 0.05


def test_to_native_accepts_torch_batches():
    transform = GridTransform(90, 110, 1.5, 1.5)
    logits = torch.randn(2, 4, 224, 224)
    native = transform.to_native(logits)
    assert isinstance(native, torch.Tensor) and native.shape == (2, 4, 90, 110) and native.dtype == torch.float32
    np.testing.assert_allclose(native[1].numpy(), transform.to_native(logits[1].numpy()), atol=1e-5)


def test_normalize_intensity():
    rng = np.random.default_rng(2)
    image = rng.gamma(2.0, 100.0, size=(3, 64, 64))
    out = normalize_intensity(image)
    assert out.dtype == np.float32 and out.min() == -1.0 and out.max() == 1.0
    cap = np.percentile(image, 98)
    # Pixels at or above the 98th percentile (over all channels) become 1.
    np.testing.assert_allclose(out[image >= cap], 1.0)
    assert np.mean(out == 1.0) == pytest.approx(0.02, abs=0.002)
    # The minimum maps to -1 and values scale linearly in between.
    low = image.min()
    inside = image < cap
    np.testing.assert_allclose(out[inside], 2 * (image[inside] - low) / (cap - low) - 1, atol=1e-5)


def test_normalize_is_per_sample_over_all_channels():
    rng = np.random.default_rng(3)
    sample = rng.uniform(0, 1, size=(3, 32, 32))
    sample[1] *= 0.5  # a darker channel stays darker
    batch = np.stack([sample, 1000 * sample + 7])
    out = normalize_intensity(batch)
    np.testing.assert_allclose(out[0], out[1], atol=1e-5)
    np.testing.assert_allclose(out[0], normalize_intensity(sample), atol=1e-6)
    assert out[0, 1].mean() < out[0, 0].mean()


def test_constant_and_mostly_empty_images(recwarn):
    out = normalize_intensity(np.full((1, 16, 16), 42.0))
    assert np.all(out == -1.0)
    sparse = np.zeros((1, 20, 20))
    sparse[0, 3, 4] = 5.0  # 0.25 % bright pixels: the 98th percentile equals the minimum
    out = normalize_intensity(sparse)
    assert out[0, 3, 4] == 1.0 and np.sum(out == -1.0) == 399
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_preprocess_output():
    rng = np.random.default_rng(4)
    image = rng.uniform(0, 500, size=(3, 120, 100)).astype(np.float32)
    model, transform = preprocess(image, (1.7, 1.7))
    assert model.shape == (3, 224, 224) and model.dtype == np.float32
    assert model.min() >= -1.0 and model.max() <= 1.0 + 1e-6
    # 120 x 1.7 = 204 mm fits in 224 mm: there is padding, and it is -1.
    assert np.all(model[:, :5, :] == -1.0)
    assert transform == GridTransform(120, 100, 1.7, 1.7)


def test_preprocess_batch_matches_single():
    rng = np.random.default_rng(5)
    batch = rng.uniform(0, 1, size=(2, 3, 80, 90)).astype(np.float32)
    batch[1] *= 300
    out, transform = preprocess(batch, (0.8, 1.1), PreprocessConfig(size=64))
    assert out.shape == (2, 3, 64, 64)
    single, _ = preprocess(batch[1], (0.8, 1.1), PreprocessConfig(size=64))
    np.testing.assert_allclose(out[1], single, atol=1e-6)


@pytest.mark.parametrize(
    "image, spacing, message",
    [
        (np.full((1, 8, 8), np.nan), (1, 1), "NaN"),
        (np.full((1, 8, 8), np.inf), (1, 1), "NaN or infinite"),
        (np.zeros((8, 8)), (1, 1), "shape"),
        (np.zeros((1, 1, 1, 8, 8)), (1, 1), "shape"),
        (np.zeros((1, 8, 8)), (0, 1), "spacing"),
        (np.zeros((1, 8, 8)), (1, -2), "spacing"),
        (np.zeros((1, 8, 8)), (1,), "spacing"),
        (np.zeros((1, 8, 8)), (1, float("nan")), "spacing"),
    ],
)
def test_bad_input_is_refused(image, spacing, message):
    with pytest.raises(ValueError, match=message):
        preprocess(image, spacing)


def test_bad_shapes_and_config_are_refused():
    transform = GridTransform(50, 60, 1.0, 1.0, size=32)
    with pytest.raises(ValueError, match="50 x 60"):
        transform.to_model(np.zeros((1, 60, 50)))
    with pytest.raises(ValueError, match="32 x 32"):
        transform.to_native(np.zeros((2, 224, 224)))
    with pytest.raises(ValueError, match="one per channel"):
        transform.to_native(np.zeros((2, 32, 32)), fill=[1, 0, 0])
    with pytest.raises(ValueError, match=r"\[..., 2\]"):
        transform.model_to_native_points(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="spacing_row"):
        GridTransform(50, 60, 0.0, 1.0)
    with pytest.raises(ValueError, match="percentile"):
        PreprocessConfig(percentile=0)


def test_config_round_trips_through_dict():
    config = PreprocessConfig(spacing_mm=1.25, size=160, percentile=99.0)
    assert PreprocessConfig.from_dict(config.to_dict()) == config
    assert PreprocessConfig.from_dict({}) == PreprocessConfig()
    with pytest.raises(ValueError, match="unknown keys"):
        PreprocessConfig.from_dict({"size": 224, "gamma": 2})
