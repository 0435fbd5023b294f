"""Train the disease classifier on measured phenotypes (ACDC), pick its settings on the
validation patients, and score it on the test patients from the true and from the
predicted segmentations.

    python Training/train_disease_phenotypes.py --weights Resources/Weights \
        --out Resources/Weights --results Training/results/cpu_hybrid/cmrfoundation/acdc

Training features come from the true ED/ES labels of the training patients
(``measurements.phenotypes``; spacing-free ratios, so ACDC's unknown spacing does not
matter). The L2 strength and the weight of the image model (the ``disease`` task in
``--weights``) are chosen on the validation patients; the final classifier is refit on
training + validation patients and written to ``OUT/disease_phenotypes.json``. Test
accuracy is reported twice: with phenotypes from the true labels (what the classifier
can do) and from ``--weights``' seg_sax_cine segmentation (what the analysis does).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from CMRFoundationLib.measurements.phenotypes import cardiac_phenotypes
from CMRFoundationLib.models.phenotype_classifier import PhenotypeClassifier
from CMRFoundationLib.tasks import DISEASES, get_task
from cmrtrain.data.acdc import LV_BLOOD, LV_MYOCARDIUM, RV_BLOOD, acdc_patients, acdc_samples, load_acdc_phase
from cmrtrain.data.splits import load_split

HERE = Path(__file__).resolve().parent

SPACING = (1.5, 1.5)  # ACDC's repack has no spacing; the features are ratios and do not depend on it
L2_CHOICES = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
IMAGE_WEIGHTS = (0.0, 0.25, 0.5, 1.0)


def truth_features(root: Path, patients: list[str]) -> np.ndarray:
    rows = []
    for patient in patients:
        (_, ed), (_, es) = (load_acdc_phase(root, patient, phase) for phase in ("ED", "ES"))
        rows.append(cardiac_phenotypes(ed, es, SPACING, lv_blood=LV_BLOOD, lv_myocardium=LV_MYOCARDIUM,
                                       rv_blood=RV_BLOOD).vector())
    return np.array(rows)


def predicted_features(root: Path, patients: list[str], weights: Path) -> np.ndarray:
    from CMRFoundationLib.inference import TaskPredictor

    predictor = TaskPredictor.load("seg_sax_cine", weights, "cpu")
    names = get_task("seg_sax_cine").labels
    lv, myo, rv = (names.index(n) for n in ("lv_blood_pool", "lv_myocardium", "rv_blood_pool"))
    rows = []
    for patient in patients:
        labels = []
        for phase in ("ED", "ES"):
            image, _ = load_acdc_phase(root, patient, phase)
            images = np.repeat(image[:, None].astype(np.float32), 3, axis=1)
            labels.append(predictor.predict_images(images, SPACING).labels)
        rows.append(cardiac_phenotypes(labels[0], labels[1], SPACING, lv_blood=lv, lv_myocardium=myo,
                                       rv_blood=rv).vector())
    return np.array(rows)


def image_probabilities(root: Path, patients: list[str], weights: Path) -> np.ndarray | None:
    from CMRFoundationLib.inference import TaskPredictor
    from CMRFoundationLib.weights import WeightsError

    try:
        predictor = TaskPredictor.load("disease", weights, "cpu")
    except (WeightsError, OSError):
        return None
    rows = []
    for patient in patients:
        sample = acdc_samples("disease", root, [patient])[0]
        rows.append(predictor.predict_images(sample.image[None], sample.spacing).probabilities[0])
    return np.array(rows)


def cross_validated_accuracy(x: np.ndarray, y: np.ndarray, l2: float, folds: int = 5) -> float:
    """Accuracy over every patient, each predicted by a model fit without its fold
    (folds stratified by class): a steadier figure than 16 test patients give."""
    fold = np.zeros(len(y), int)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        fold[members] = np.arange(len(members)) % folds
    correct = 0
    for k in range(folds):
        model = PhenotypeClassifier.fit(x[fold != k], y[fold != k], DISEASES, l2=l2)
        correct += int((model.predict_proba(x[fold == k]).argmax(1) == y[fold == k]).sum())
    return correct / len(y)


def accuracy(p: np.ndarray, y: np.ndarray) -> float:
    return float((p.argmax(1) == y).mean())


def confusion(p: np.ndarray, y: np.ndarray) -> list[list[int]]:
    matrix = np.zeros((len(DISEASES), len(DISEASES)), int)
    for t, q in zip(y, p.argmax(1)):
        matrix[t, q] += 1
    return matrix.tolist()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared-root", default=str(HERE.parent.parent / "shared" / "data"))
    parser.add_argument("--weights", required=True, help="weights folder with seg_sax_cine (and disease) models")
    parser.add_argument("--out", required=True, help="folder to write disease_phenotypes.json into")
    parser.add_argument("--results", help="folder for disease_phenotypes.json/.md with the test numbers")
    args = parser.parse_args(argv)
    root = Path(args.shared_root) / "acdc"
    groups = acdc_patients(root)
    split = load_split("acdc")
    y = {name: np.array([DISEASES.index(groups[p]) for p in split[name]]) for name in ("train", "val", "test")}
    x = {name: truth_features(root, split[name]) for name in ("train", "val", "test")}
    image_p = {name: image_probabilities(root, split[name], Path(args.weights)) for name in ("val", "test")}

    scores = {}
    for l2 in L2_CHOICES:
        model = PhenotypeClassifier.fit(x["train"], y["train"], DISEASES, l2=l2)
        for weight in IMAGE_WEIGHTS if image_p["val"] is not None else (0.0,):
            model.image_model_weight = weight
            scores[(l2, weight)] = accuracy(model.predict_proba(x["val"], image_p["val"]), y["val"])
    # Best validation accuracy; ties go to the stronger penalty and the smaller image weight.
    l2, weight = max(scores, key=lambda k: (scores[k], k[0], -k[1]))
    print(f"validation accuracy by (l2, image weight): {scores}; chosen l2={l2}, image weight={weight}")

    final = PhenotypeClassifier.fit(np.concatenate([x["train"], x["val"]]), np.concatenate([y["train"], y["val"]]),
                                    DISEASES, l2=l2)
    final.image_model_weight = weight
    x_pred = predicted_features(root, split["test"], Path(args.weights))
    results = {
        "test_patients": len(split["test"]),
        "validation_accuracy": scores[(l2, weight)],
        "l2": l2, "image_model_weight": weight,
        "accuracy_true_labels": accuracy(final.predict_proba(x["test"], image_p["test"]), y["test"]),
        "cross_validated_accuracy_true_labels_all_patients": cross_validated_accuracy(
            np.concatenate(list(x.values())), np.concatenate(list(y.values())), l2),
        "accuracy_predicted_segmentation": accuracy(final.predict_proba(x_pred, image_p["test"]), y["test"]),
        "accuracy_predicted_segmentation_phenotypes_only": accuracy(final.predict_proba(x_pred), y["test"]),
        "confusion_predicted_segmentation": confusion(final.predict_proba(x_pred, image_p["test"]), y["test"]),
        "classes": list(DISEASES),
        "segmentation_weights": Path(args.weights).name,
    }
    if image_p["test"] is not None:
        results["accuracy_image_model_alone"] = accuracy(image_p["test"], y["test"])
    final.info = {"training": {"data": "ACDC train + val patients (Training/splits/acdc.json), true labels",
                               "patients": len(split["train"]) + len(split["val"]), "l2": l2},
                  "evaluation": {k: v for k, v in results.items() if "accuracy" in k}}
    final.save(args.out)
    print(json.dumps(results, indent=1))
    if args.results:
        folder = Path(args.results)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "disease_phenotypes.json").write_text(json.dumps(results, indent=1) + "\n")
        lines = ["# Disease class from phenotypes (ACDC test patients)", "",
                 f"{results['test_patients']} test patients; L2 {l2}, image-model weight {weight} (chosen on validation).", "",
                 "| features from | accuracy |", "|---|---|",
                 f"| true labels | {results['accuracy_true_labels']:.3f} |",
                 f"| true labels, 5-fold cross-validation over all {sum(len(v) for v in y.values())} patients | "
                 f"{results['cross_validated_accuracy_true_labels_all_patients']:.3f} |",
                 f"| predicted segmentation (+ image model) | {results['accuracy_predicted_segmentation']:.3f} |",
                 f"| predicted segmentation, phenotypes only | {results['accuracy_predicted_segmentation_phenotypes_only']:.3f} |"]
        if "accuracy_image_model_alone" in results:
            lines.append(f"| image model alone | {results['accuracy_image_model_alone']:.3f} |")
        lines += ["", "Confusion (rows truth, columns predicted; " + ", ".join(DISEASES) + "):", ""]
        lines += ["    " + " ".join(f"{v:3d}" for v in row) for row in results["confusion_predicted_segmentation"]]
        (folder / "disease_phenotypes.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
