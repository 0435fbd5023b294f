"""Score the RV insertion points as the analysis finds them: the heatmap model alone, the
geometric rule on the predicted segmentation alone, and the two joined
(``measurements.insertion_points.joined_insertion_points``), on the ACDC test patients.

    python Training/evaluate_insertion_points.py --weights Resources/Weights \
        --results Training/results/cpu_hybrid/cmrfoundation/acdc

The reference points are the rule on the true labels (ACDC has no annotated points; the
rule is 0.8 mm from the synthetic truth, see insertion_points.py). Every ED and ES slice
with reference points counts; a method that gives no point on a slice is counted as a
miss (its coverage is reported), not as an error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from CMRFoundationLib.inference import TaskPredictor
from CMRFoundationLib.measurements.insertion_points import joined_insertion_points, stack_insertion_points
from CMRFoundationLib.tasks import get_task
from cmrtrain.data.acdc import LV_BLOOD, LV_MYOCARDIUM, RV_BLOOD, load_acdc_phase
from cmrtrain.data.splits import load_split

HERE = Path(__file__).resolve().parent

SPACING = (1.5, 1.5)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared-root", default=str(HERE.parent.parent / "shared" / "data"))
    parser.add_argument("--weights", required=True)
    parser.add_argument("--results", help="folder for insertion_points.json/.md")
    args = parser.parse_args(argv)
    root = Path(args.shared_root) / "acdc"
    segmenter = TaskPredictor.load("seg_sax_cine", args.weights, "cpu")
    heatmaps = TaskPredictor.load("rv_insertion", args.weights, "cpu")
    names = get_task("seg_sax_cine").labels
    lv, myo, rv = (names.index(n) for n in ("lv_blood_pool", "lv_myocardium", "rv_blood_pool"))
    errors: dict[str, list[np.ndarray]] = {"heatmap": [], "segmentation": [], "joined": []}
    for patient in load_split("acdc")["test"]:
        for phase in ("ED", "ES"):
            image, truth_labels = load_acdc_phase(root, patient, phase)
            truth = stack_insertion_points(truth_labels, lv_blood=LV_BLOOD, lv_myocardium=LV_MYOCARDIUM,
                                           rv_blood=RV_BLOOD)
            images = np.repeat(image[:, None].astype(np.float32), 3, axis=1)
            predicted_labels = segmenter.predict_images(images, SPACING).labels
            from_seg = stack_insertion_points(predicted_labels, lv_blood=lv, lv_myocardium=myo, rv_blood=rv)
            from_heat = heatmaps.predict_images(images, SPACING).points.astype(np.float32)
            joined, _ = joined_insertion_points(from_seg, from_heat)
            has_truth = np.isfinite(truth).all(axis=(1, 2))
            for name, points in (("heatmap", from_heat), ("segmentation", from_seg), ("joined", joined)):
                errors[name].append((np.linalg.norm((points - truth) * SPACING, axis=-1))[has_truth])
    results = {}
    for name, chunks in errors.items():
        e = np.concatenate(chunks)  # [n, 2] anterior, inferior; NaN = no point
        found = np.isfinite(e)
        results[name] = {
            "slices": int(len(e)),
            "coverage": [round(float(found[:, i].mean()), 3) for i in range(2)],
            "mean_mm": [round(float(np.nanmean(e[:, i])), 2) for i in range(2)],
            "median_mm": [round(float(np.nanmedian(e[:, i])), 2) for i in range(2)],
            "p90_mm": [round(float(np.nanpercentile(e[:, i], 90)), 2) for i in range(2)],
        }
    print(json.dumps(results, indent=1))
    if args.results:
        folder = Path(args.results)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "insertion_points.json").write_text(json.dumps({"weights": Path(args.weights).name, **results},
                                                                 indent=1) + "\n")
        lines = ["# RV insertion points on the ACDC test patients (anterior / inferior)", "",
                 "Reference: the rule on the true labels; 1.5 mm pixels assumed.", "",
                 "| method | slices | coverage | mean mm | median mm | 90th pct mm |", "|---|---|---|---|---|---|"]
        for name, r in results.items():
            lines.append(f"| {name} | {r['slices']} | {r['coverage'][0]:.2f} / {r['coverage'][1]:.2f} | "
                         f"{r['mean_mm'][0]:.1f} / {r['mean_mm'][1]:.1f} | {r['median_mm'][0]:.1f} / {r['median_mm'][1]:.1f} | "
                         f"{r['p90_mm'][0]:.1f} / {r['p90_mm'][1]:.1f} |")
        (folder / "insertion_points.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
