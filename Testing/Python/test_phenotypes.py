"""Disease phenotypes measured from label maps, and the classifier that reads them.

The phenotypes are checked on drawn hearts whose answers are known (EF, volume ratios,
a wall thinned in one sector); the classifier on separable clusters, its file round
trip, and every way a classifier file can be wrong. ACDC accuracy is the evaluation
script's (Training/train_disease_phenotypes.py), not a test's.
"""

import json
import math

import numpy as np
import pytest

from CMRFoundationLib.measurements.phenotypes import PHENOTYPE_FEATURES, cardiac_phenotypes, sector_thickness
from CMRFoundationLib.models.phenotype_classifier import FILE_NAME, PhenotypeClassifier
from CMRFoundationLib.weights import record_in_index, resolve_weights_dir

LV, MYO, RV = 1, 2, 3


def heart(blood_radius: float, wall: float, rv_radius: float, slices: int = 6, size: int = 96,
          thin_sector: bool = False) -> np.ndarray:
    """A stack of concentric LV rings with an RV disc beside them (pixels of 1 mm)."""
    yy, xx = np.mgrid[:size, :size].astype(float)
    r = np.hypot(yy - 48, xx - 40)
    outer = blood_radius + wall - (0.6 * wall * (xx > 40 + blood_radius * 0.5) if thin_sector else 0)
    frame = np.zeros((size, size), np.uint8)
    frame[np.hypot(yy - 48, xx - 40 - blood_radius - wall - rv_radius) < rv_radius] = RV
    frame[r < outer] = MYO
    frame[r < blood_radius] = LV
    return np.repeat(frame[None], slices, axis=0)


def test_ratios_of_a_drawn_heart():
    ed, es = heart(20, 8, 14), heart(14, 11, 10)
    values = cardiac_phenotypes(ed, es, (1.0, 1.0), lv_blood=LV, lv_myocardium=MYO, rv_blood=RV).values
    area = lambda labels, k: float((labels == k).sum())  # noqa: E731
    assert values["lv_ef"] == pytest.approx(1 - area(es, LV) / area(ed, LV))
    assert values["rv_ef"] == pytest.approx(1 - area(es, RV) / area(ed, RV))
    assert values["rv_lv_edv_ratio"] == pytest.approx(area(ed, RV) / area(ed, LV))
    assert values["lv_myocardium_edv_ratio"] == pytest.approx(area(ed, MYO) / area(ed, LV))
    # Thickness over diameter: 8 / 40 at ED; uniform walls thicken uniformly.
    assert values["lv_mean_thickness_diameter_ed"] == pytest.approx(8 / 40, rel=0.1)
    assert values["lv_thickening_mean"] == pytest.approx(11 / 8 - 1, rel=0.15)
    assert values["lv_thickening_sd"] < 0.05 and values["lv_thickness_cv_ed"] < 0.05


def test_a_thinned_sector_shows_as_regional_spread():
    uniform = cardiac_phenotypes(heart(20, 8, 14), heart(14, 11, 10), (1.0, 1.0), lv_blood=LV, lv_myocardium=MYO,
                                 rv_blood=RV).values
    scarred = cardiac_phenotypes(heart(20, 8, 14, thin_sector=True), heart(14, 11, 10), (1.0, 1.0), lv_blood=LV,
                                 lv_myocardium=MYO, rv_blood=RV).values
    assert scarred["lv_thickness_cv_ed"] > 3 * max(uniform["lv_thickness_cv_ed"], 0.02)
    assert scarred["lv_thickening_sd"] > 3 * max(uniform["lv_thickening_sd"], 0.02)


def test_sector_thickness_is_in_millimetres_and_spacing_free_as_a_ratio():
    yy, xx = np.mgrid[:128, :128]
    r = np.hypot(yy - 64, xx - 64)
    blood, myo = r < 15, (r >= 15) & (r < 21)
    at_1_5 = sector_thickness(myo, blood, (1.5, 1.5))
    assert np.allclose(at_1_5, 9.0, rtol=0.06)  # 6 pixels of 1.5 mm
    values = [cardiac_phenotypes(heart(20, 8, 14), heart(14, 11, 10), (s, s), lv_blood=LV, lv_myocardium=MYO,
                                 rv_blood=RV).vector() for s in (1.0, 1.7)]
    np.testing.assert_allclose(values[0], values[1], rtol=1e-4)  # float32 distance maps


def test_missing_structures_give_nan_and_a_note():
    empty = np.zeros((3, 32, 32), np.uint8)
    result = cardiac_phenotypes(empty, empty, (1.0, 1.0), lv_blood=LV, lv_myocardium=MYO, rv_blood=RV)
    assert np.isnan(result.vector()).all() and result.notes
    assert result.to_dict()["values"]["lv_ef"] is None
    with pytest.raises(ValueError, match="one shape"):
        cardiac_phenotypes(empty, empty[:2], (1.0, 1.0), lv_blood=LV, lv_myocardium=MYO, rv_blood=RV)


def _clusters(rng):
    centres = rng.normal(0, 3, size=(5, len(PHENOTYPE_FEATURES)))
    y = np.repeat(np.arange(5), 12)
    return centres[y] + rng.normal(0, 0.5, size=(len(y), len(PHENOTYPE_FEATURES))), y


def test_classifier_learns_round_trips_and_pools_the_image_model(tmp_path):
    rng = np.random.default_rng(0)
    x, y = _clusters(rng)
    classes = ("NOR", "DCM", "HCM", "MINF", "RV")
    model = PhenotypeClassifier.fit(x, y, classes, l2=0.1)
    assert (model.predict_proba(x).argmax(1) == y).mean() > 0.95
    x_missing = x.copy()
    x_missing[:, 0] = np.nan  # an unmeasurable feature is imputed, not fatal
    assert np.isfinite(model.predict_proba(x_missing)).all()
    model.image_model_weight = 2.0
    confident_image = np.tile(np.eye(5)[4], (len(y), 1))
    assert (model.predict_proba(x, confident_image).argmax(1) == 4).mean() > (y == 4).mean()
    model.save(tmp_path / "new folder")  # created when missing
    loaded = PhenotypeClassifier.load(tmp_path / "new folder")
    np.testing.assert_allclose(loaded.predict_proba(x, confident_image), model.predict_proba(x, confident_image))


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(format="something-else"), "not a phenotype classifier"),
    (lambda d: d.update(coef=[[1.0]]), "coef must be"),
    (lambda d: d.update(scale=[0.0] * len(d["scale"])), "positive"),
    (lambda d: d.update(features=["lv_ef"] * (len(d["features"]) - 1) + ["shoe_size"]), "shoe_size"),
    (lambda d: d.pop("intercept"), "incomplete"),
])
def test_a_bad_classifier_file_is_named_with_the_reason(tmp_path, change, message):
    model = PhenotypeClassifier.fit(*_clusters(np.random.default_rng(1)), ("NOR", "DCM", "HCM", "MINF", "RV"))
    data = model.to_dict()
    change(data)
    (tmp_path / FILE_NAME).write_text(json.dumps(data))
    record_in_index(tmp_path, FILE_NAME)  # approved as it is: the classifier's own checks refuse it
    with pytest.raises(ValueError, match=message) as error:
        PhenotypeClassifier.load(tmp_path)
    assert FILE_NAME in str(error.value)
    (tmp_path / FILE_NAME).write_text("{not json")
    record_in_index(tmp_path, FILE_NAME)
    with pytest.raises(ValueError, match="not valid JSON"):
        PhenotypeClassifier.load(tmp_path)


def test_the_carried_classifier_loads_and_names_its_evaluation():
    model = PhenotypeClassifier.load(resolve_weights_dir(None))
    assert model.features == PHENOTYPE_FEATURES and len(model.classes) == 5
    assert math.isfinite(model.info["evaluation"]["accuracy_true_labels"])
