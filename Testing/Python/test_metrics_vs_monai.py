"""Our Dice and HD95 (cmrtrain.metrics) against MONAI's on synthetic shapes and real ACDC labels.

One convention differs, kept on purpose (asserted below): a class absent from both masks
has our Dice NaN (it says nothing), MONAI's 1.0 with ``ignore_empty=False``; MONAI's default
(``ignore_empty=True``) gives NaN whenever the truth is empty, even for a wrong prediction,
where ours gives 0. HD95 agrees on empty classes: NaN when either side lacks the class
(MONAI's plain Hausdorff distance would be inf there, its 95th percentile is NaN). Both take the boundary as the pixels with a face neighbour outside the mask (the image edge
counting as outside), the distances in mm along each axis's spacing, and the larger of the
two directed 95th percentiles (linear interpolation).

MONAI's CPU Hausdorff distance calls SciPy (binary_erosion, KDTree), which this project does
not install. Without SciPy, those two calls are replaced by exact stand-ins: SciPy's default
erosion (face-connected, outside counts as background) through SimpleITK, and a brute-force
nearest neighbour. Everything else, MONAI's own code, runs as it is.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from cmrtrain.metrics import dice_per_class, hd95_per_class
from conftest import SHARED_DATA

torch = pytest.importorskip("torch")
monai_metrics = pytest.importorskip("monai.metrics")

ACDC = SHARED_DATA / "acdc"
# MONAI's own notices: a deprecated argument it passes itself, and the empty classes meant here.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*always_return_as_numpy.*:FutureWarning"),
    pytest.mark.filterwarnings("ignore:the (ground truth|prediction) of class:UserWarning"),
]
HAS_SCIPY = importlib.util.find_spec("scipy") is not None


def _scipy_erosion(mask: np.ndarray) -> np.ndarray:
    """scipy.ndimage.binary_erosion with its defaults, through SimpleITK."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.asarray(mask, dtype=np.uint8))
    radius = [1] * mask.ndim
    return sitk.GetArrayFromImage(sitk.BinaryErode(image, radius, sitk.sitkCross, 0.0, 1.0, False)).astype(bool)


class _BruteForceTree:
    """scipy.spatial.KDTree(points).query(x, k=1), by comparing every pair (exact)."""

    def __init__(self, points, leafsize=None):
        self.points = np.asarray(points, dtype=np.float64)

    def query(self, x, k=1):
        x = np.asarray(x, dtype=np.float64)
        nearest = np.concatenate(
            [np.sqrt(((x[i : i + 256, None] - self.points[None]) ** 2).sum(-1)).min(1) for i in range(0, len(x), 256)]
        )
        return nearest, None


@pytest.fixture
def monai_hd95(monkeypatch):
    """MONAI's HD95 per class (1..n-1) of two label maps, SciPy's two calls replaced where it is missing."""
    if not HAS_SCIPY:
        import monai.metrics.utils as utils

        monkeypatch.setattr(utils, "binary_erosion", _scipy_erosion)
        monkeypatch.setattr(utils, "KDTree", _BruteForceTree)
        monkeypatch.setattr(utils, "has_scipy_kdtree", True)

    def hd95(predicted, truth, n_classes, spacing):
        result = monai_metrics.compute_hausdorff_distance(
            _one_hot(predicted, n_classes),
            _one_hot(truth, n_classes),
            include_background=False,
            percentile=95,
            spacing=list(spacing),
        )
        return result[0].double().numpy()

    return hd95


def _one_hot(labels: np.ndarray, n_classes: int):
    return torch.from_numpy(np.stack([labels == c for c in range(n_classes)])[None])


def _monai_dice(predicted, truth, n_classes, ignore_empty=False):
    metric = monai_metrics.DiceMetric(include_background=False, reduction="none", ignore_empty=ignore_empty)
    return metric(_one_hot(predicted, n_classes), _one_hot(truth, n_classes))[0].double().numpy()


def _shapes() -> tuple[np.ndarray, np.ndarray]:
    """Two label maps (3 classes) 64x56: a disc against a shifted ellipse, a ring, and a
    block on the image edge that the prediction cuts short."""
    rows, cols = np.mgrid[:64, :56]
    truth = np.zeros((64, 56), np.uint8)
    predicted = np.zeros_like(truth)
    truth[(rows - 30) ** 2 + (cols - 25) ** 2 <= 12**2] = 1
    predicted[((rows - 33) / 14.0) ** 2 + ((cols - 27) / 10.0) ** 2 <= 1] = 1
    truth[(np.hypot(rows - 30, cols - 25) > 12) & (np.hypot(rows - 30, cols - 25) <= 16)] = 2
    predicted[(np.hypot(rows - 32, cols - 26) > 14) & (np.hypot(rows - 32, cols - 26) <= 17)] = 2
    truth[:9, 40:] = 3
    predicted[:5, 44:] = 3
    return predicted, truth


def test_dice_matches_monai_on_synthetic_shapes():
    predicted, truth = _shapes()
    ours = dice_per_class(predicted, truth, 4)
    assert 0.3 < ours.min() and ours.max() < 0.95  # overlapping, not equal: the comparison means something
    np.testing.assert_allclose(ours, _monai_dice(predicted, truth, 4), rtol=1e-6)


def test_hd95_matches_monai_on_synthetic_shapes(monai_hd95):
    predicted, truth = _shapes()
    for spacing in [(1.0, 1.0), (1.25, 0.7)]:  # anisotropic: rows and columns must not be swapped
        ours = hd95_per_class(predicted, truth, 4, spacing)
        assert np.all(ours > 1.0)
        np.testing.assert_allclose(ours, monai_hd95(predicted, truth, 4, spacing), rtol=1e-5)


def test_empty_classes_follow_our_conventions(monai_hd95):
    predicted, truth = _shapes()
    truth[truth == 3] = 0  # class 3 predicted only
    predicted[predicted == 2] = 0  # class 2 in the truth only
    predicted[predicted == 1], truth[truth == 1] = 0, 0  # class 1 in neither
    ours_dice, monai_dice = dice_per_class(predicted, truth, 4), _monai_dice(predicted, truth, 4)
    assert np.isnan(ours_dice[0]) and monai_dice[0] == 1.0  # absent from both
    np.testing.assert_array_equal(ours_dice[1:], [0.0, 0.0])
    np.testing.assert_array_equal(monai_dice[1:], [0.0, 0.0])
    assert np.isnan(_monai_dice(predicted, truth, 4, ignore_empty=True)[2])  # MONAI's default: empty truth is NaN
    assert np.isnan(hd95_per_class(predicted, truth, 4, (1.0, 1.0))).all()
    assert np.isnan(monai_hd95(predicted, truth, 4, (1.0, 1.0))).all()


@pytest.mark.skipif(not ACDC.is_dir(), reason="ACDC data (../shared/data/acdc) not present")
@pytest.mark.parametrize("patient", ["patient001", "patient061"])
def test_acdc_end_diastole_against_end_systole(patient, monai_hd95):
    """Real labels (RV blood, LV myocardium, LV blood): the ES labels scored against the ED
    ones, in 3D with ACDC-like anisotropic spacing and on a mid slice in 2D."""
    ed = np.load(ACDC / f"{patient}_ED.npz")["label"]
    es = np.load(ACDC / f"{patient}_ES.npz")["label"]
    ours_dice = dice_per_class(es, ed, 4)
    np.testing.assert_allclose(ours_dice, _monai_dice(es, ed, 4), rtol=1e-6)
    spacing = (10.0, 1.5, 1.4)
    np.testing.assert_allclose(hd95_per_class(es, ed, 4, spacing), monai_hd95(es, ed, 4, spacing), rtol=1e-5)
    k = len(ed) // 2
    ours = hd95_per_class(es[k], ed[k], 4, spacing[1:])
    assert np.isfinite(ours).all()
    np.testing.assert_allclose(ours, monai_hd95(es[k], ed[k], 4, spacing[1:]), rtol=1e-5)
