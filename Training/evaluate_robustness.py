"""Vendor robustness without another vendor's labels: the ACDC test patients under
simulated scanner and protocol changes, scored for one or more weight sets side by side.

    python Training/evaluate_robustness.py --weights Resources/Weights runs/weights_hybrid \
        --names "CPU nano" "CPU hybrid" --out Training/results/cpu_hybrid/robustness

Each condition changes every test image the same way before the model's own
pre-processing, as another site's images would differ: the blood/myocardium contrast
(bSSFP flip angle and field strength change it), gamma, strong coil shading (bias
field), a lower signal-to-noise ratio, a coarser acquisition matrix, and all of them at
once. The shifts are fixed (seeded), so runs and weight sets compare directly. Mean Dice
per structure of seg_sax_cine is reported per condition, with the drop from the
original images.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from CMRFoundationLib.inference import TaskPredictor
from CMRFoundationLib.tasks import get_task
from cmrtrain.data import samples_for
from cmrtrain.data.sample import Sample
from cmrtrain.evaluation import evaluate


def _unit(image: np.ndarray) -> np.ndarray:
    top = np.percentile(image, 99.5)
    return np.clip(image / max(top, 1e-6), 0.0, 1.0)


def _bias(shape, rng, strength=0.7) -> np.ndarray:
    rows, cols = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    a, b, c = rng.uniform(-1, 1, 3)
    return np.exp(strength * (a * rows + b * cols + c * rows * cols) / 2)


def _low_resolution(image: np.ndarray, factor: int = 2) -> np.ndarray:
    rows, cols = (s // factor * factor for s in image.shape)
    small = image[:rows, :cols].reshape(rows // factor, factor, cols // factor, factor).mean(axis=(1, 3))
    out = image.copy()
    out[:rows, :cols] = np.repeat(np.repeat(small, factor, 0), factor, 1)
    return out


def low_contrast(image, labels, rng):
    """Blood darker and myocardium brighter: half the blood-myocardium contrast, smoothly at the borders."""
    out = image.copy()
    blood, myocardium = np.isin(labels, (1, 3)), labels == 2
    if blood.any() and myocardium.any():
        b, m = image[blood].mean(), image[myocardium].mean()
        target_b, target_m = (b + m) / 2 + (b - m) / 4, (b + m) / 2 - (b - m) / 4
        out[blood] += target_b - b
        out[myocardium] += target_m - m
    return np.clip(out, 0, 1)


CONDITIONS = {
    "original": lambda image, labels, rng: image,
    "gamma 0.6": lambda image, labels, rng: image ** 0.6,
    "gamma 1.7": lambda image, labels, rng: image ** 1.7,
    "low blood-myocardium contrast": low_contrast,
    "bias field": lambda image, labels, rng: np.clip(image * _bias(image.shape, rng), 0, 1),
    "noise (SNR ~8)": lambda image, labels, rng: np.clip(image + rng.normal(0, 0.08, image.shape), 0, 1),
    "coarse matrix (2x)": lambda image, labels, rng: _low_resolution(image, 2),
}


def everything(image, labels, rng):
    image = low_contrast(image, labels, rng) ** 1.4
    image = np.clip(image * _bias(image.shape, rng), 0, 1)
    return np.clip(_low_resolution(image, 2) + rng.normal(0, 0.05, image.shape), 0, 1)


CONDITIONS["all of them"] = everything


def shifted(samples: list[Sample], condition) -> list[Sample]:
    out = []
    for i, sample in enumerate(samples):
        rng = np.random.default_rng(i)  # the same shift for every weight set
        image = condition(_unit(sample.image[0]), sample.target, rng).astype(np.float32)
        out.append(Sample(np.repeat(image[None], 3, axis=0), sample.spacing, sample.target, sample.case, sample.source))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", nargs="+", required=True, help="weights folders to compare")
    parser.add_argument("--names", nargs="+", help="their names in the table")
    parser.add_argument("--out", help="folder for robustness.json/.md")
    args = parser.parse_args(argv)
    names = args.names or [Path(w).name for w in args.weights]
    task = get_task("seg_sax_cine")
    samples = samples_for(task, ["acdc"], "test")
    structures = [label for label in task.labels if label != "background"]
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name, folder in zip(names, args.weights):
        predictor = TaskPredictor.load(task, folder, "cpu")
        results[name] = {}
        for condition_name, condition in CONDITIONS.items():
            report = evaluate(task, predictor, shifted(samples, condition))
            results[name][condition_name] = {s: round(report["dice"][s]["mean"], 3) for s in structures}
            print(name, condition_name, results[name][condition_name], flush=True)
    if args.out:
        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "robustness.json").write_text(json.dumps({"samples": len(samples), "results": results}, indent=1) + "\n")
        lines = ["# seg_sax_cine under simulated scanner changes (ACDC test patients)", "",
                 f"{len(samples)} slices of {len({s.case for s in samples})} patients; mean Dice LV / myocardium / RV "
                 "(change from the original images).", "",
                 "| condition | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for condition_name in CONDITIONS:
            cells = []
            for name in names:
                now, before = results[name][condition_name], results[name]["original"]
                cells.append(" / ".join(f"{now[s]:.3f}" for s in structures)
                             + ("" if condition_name == "original" else
                                f" ({np.mean([now[s] - before[s] for s in structures]):+.3f})"))
            lines.append(f"| {condition_name} | " + " | ".join(cells) + " |")
        (folder / "robustness.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
