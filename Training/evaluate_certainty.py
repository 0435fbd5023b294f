"""Does the segmentation certainty the analysis shows (``inference.segmentation_certainty``)
tell the bad slices from the good? Per test image of a segmentation task (e.g. ACDC ED and
ES slices, Bernard et al., IEEE TMI 2018): certainty against mean Dice, and what a threshold
catches. The thresholds the analysis flags with (parts/helpers.py) are read off these tables.

    python Training/evaluate_certainty.py --weights DIR [--task seg_sax_cine] [--source acdc]
        [--synthetic-root runs/synthetic] [--name NAME] [--out Training/results/certainty]

Writes OUT/NAME.md and OUT/NAME.json: Spearman correlation, and for candidate thresholds
the share of slices flagged and the mean Dice of flagged and unflagged slices (Dice of the
structures present in the truth or the prediction; slices with neither are left out).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from CMRFoundationLib.inference import TaskPredictor
from cmrtrain.data import samples_for
from cmrtrain.metrics import dice_per_class

HERE = Path(__file__).resolve().parent
THRESHOLDS = (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)


def ranks(values: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(values)).astype(float)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--task", default="seg_sax_cine", help="a segmentation task")
    parser.add_argument("--source", default="acdc", help="acdc, emidec or synthetic (test split)")
    parser.add_argument("--synthetic-root", help="synthetic study cache, for --source synthetic")
    parser.add_argument("--name", help="results file name (default TASK_SOURCE)")
    parser.add_argument("--out", default=str(HERE / "results" / "certainty"))
    args = parser.parse_args(argv)
    args.name = args.name or f"{args.task}_{args.source}"
    samples = samples_for(args.task, [args.source], "test", synthetic_root=args.synthetic_root)
    if not samples:
        print(f"no {args.source} test samples of {args.task}: nothing to evaluate")
        return 0
    predictor = TaskPredictor.load(args.task, args.weights, "cpu")
    n_classes = len(predictor.task.labels)  # background included
    certainty, dice = [], []
    for sample in samples:
        result = predictor.predict_images(sample.image[None], sample.spacing)
        scores = dice_per_class(result.labels[0], sample.target, n_classes)  # NaN: absent from both
        if np.isnan(scores).all() or not np.isfinite(result.certainty[0]):
            continue
        certainty.append(float(result.certainty[0]))
        dice.append(float(np.nanmean(scores)))
    certainty, dice = np.array(certainty), np.array(dice)
    rho = float(np.corrcoef(ranks(certainty), ranks(dice))[0, 1])
    rows = []
    for threshold in THRESHOLDS:
        low = certainty < threshold
        rows.append({"threshold": threshold, "flagged_share": float(low.mean()),
                     "dice_flagged": float(dice[low].mean()) if low.any() else None,
                     "dice_not_flagged": float(dice[~low].mean()) if (~low).any() else None,
                     "poor_slices_caught": float((low & (dice < 0.7)).sum() / max(1, (dice < 0.7).sum()))})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"weights": args.weights, "slices": len(dice), "spearman": rho, "poor_slices": int((dice < 0.7).sum()),
               "thresholds": rows}
    (out / f"{args.name}.json").write_text(json.dumps(summary, indent=1))
    lines = [f"# Segmentation certainty against Dice ({args.name})", "",
             f"Weights `{args.weights}`; {len(dice)} {args.source} test images with a structure; Spearman "
             f"rho {rho:.2f}; {summary['poor_slices']} slices with mean Dice < 0.7.", "",
             "| certainty below | slices flagged | mean Dice flagged | mean Dice not flagged | Dice < 0.7 caught |",
             "|---|---|---|---|---|"]
    for row in rows:
        fmt = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
        lines.append(f"| {row['threshold']:.2f} | {row['flagged_share']:.0%} | {fmt(row['dice_flagged'])} | "
                     f"{fmt(row['dice_not_flagged'])} | {row['poor_slices_caught']:.0%} |")
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
