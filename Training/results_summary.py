"""Collect the recorded evaluations into one results page with the anchors beside them.

    python Training/results_summary.py Training/results/cpu_nano

Reads RUN/<source>/<task>.json written by train_cpu_weights.py and evaluate.py under the
results folder (one sub-folder per run, see RUNS) and writes RESULTS.md there:

1. the headline numbers against the anchors (the method's published figures, nnU-Net on
   ACDC, the ResNet50 baseline trained the same way, myopari's ONNX models);
2. every task's test numbers per data source;
3. the value of pretraining: from the pretrained (DINO or masked-image) encoder vs from scratch, and few-shot curves.

A run or number that is missing shows as "not run", so a partial set of runs still
gives a readable page.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from CMRFoundationLib.tasks import TASKS, get_task
from cmrtrain.evaluation import kind_metric

# Published figures (not re-computable on our split: they come from the papers' own
# test sets). The method: ViT-S/8 DINO-pretrained on CMR, finetuned per task.
PUBLISHED = {
    "The method (published)": {"sax_lv": 0.933, "sax_myo": 0.879, "sax_rv": 0.907, "lge_myo": 0.844,
                               "rvi_ant": 1.9, "rvi_inf": 1.8, "lge_detection": 0.733, "disease": 0.70},
    "nnU-Net on ACDC (published)": {"sax_lv": 0.954, "sax_myo": 0.892, "sax_rv": 0.902},
}
# Headline columns: (key, heading, source, task, how to read the value from a result)
HEADLINE = [
    ("sax_lv", "cine SAX Dice LV", "acdc", "seg_sax_cine", lambda r: r["dice"]["lv_blood_pool"]["mean"]),
    ("sax_myo", "cine SAX Dice myocardium", "acdc", "seg_sax_cine", lambda r: r["dice"]["lv_myocardium"]["mean"]),
    ("sax_rv", "cine SAX Dice RV", "acdc", "seg_sax_cine", lambda r: r["dice"]["rv_blood_pool"]["mean"]),
    ("lge_myo", "LGE Dice myocardium", "emidec", "seg_lge", lambda r: r["dice"]["lv_myocardium"]["mean"]),
    ("rvi_ant", "RV insertion anterior (mm)", "acdc", "rv_insertion",
     lambda r: r["error_mm"]["anterior_rv_insertion"]["mean"]),
    ("rvi_inf", "RV insertion inferior (mm)", "acdc", "rv_insertion",
     lambda r: r["error_mm"]["inferior_rv_insertion"]["mean"]),
    ("lge_detection", "LGE detection (accuracy)", "emidec", "lge_presence", lambda r: r["accuracy"]),
    ("disease", "disease (accuracy)", "acdc", "disease", lambda r: r["accuracy"]),
]


def measured_rows(ours: str = "comparison", baseline: str = "comparison", before: str | None = None) -> list:
    """Measured rows of the headline table: (row name, run folder, method name in that run).
    A run folder is relative to the results folder: the ResNet50 baseline and the previous
    shipped set may come from another one (``../cpu_nano/comparison``: same splits, same code)."""
    rows = [("CMRFoundation, CPU weights (shipped)", ours, "CMRFoundation")]
    if before:
        rows.append(("CMRFoundation, previous CPU weights", before, "CMRFoundation"))
    return rows + [("ResNet50 baseline, same training (CPU)", baseline, "ResNet50 baseline"),
                   ("myopari ACDC / EMIDEC model (ONNX)", ours, "myopari (ONNX)")]


def load_result(root: Path, run: str, source: str, task: str, method: str | None = None) -> dict | None:
    """The result of ``method`` (default: the only or first one) in RUN/SOURCE/TASK.json."""
    path = root / run / source / f"{task}.json"
    if not path.exists():
        return None
    results = json.loads(path.read_text())["results"]
    if method is None:
        return next(iter(results.values()), None)
    return results.get(method)


def _cell(value: float | None, mm: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f}" if mm else f"{value:.3f}"


def headline_table(root: Path, measured: list) -> list[str]:
    lines = ["| | " + " | ".join(h for _, h, *_ in HEADLINE) + " |", "|---" * (len(HEADLINE) + 1) + "|"]
    for name, figures in PUBLISHED.items():
        cells = [_cell(figures.get(key), key.startswith("rvi")) if key in figures else "-" for key, *_ in HEADLINE]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for row, run, method in measured:
        cells = []
        for key, _, source, task, read in HEADLINE:
            result = load_result(root, run, source, task, method)
            cells.append(_cell(read(result), key.startswith("rvi")) if result else "-")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return lines


def all_tasks_table(root: Path, run: str) -> list[str]:
    lines = ["| task | source | metric | value | test samples |", "|---|---|---|---|---|"]
    for name in TASKS:
        task = get_task(name)
        for folder in sorted(p for p in (root / run).glob("*") if p.is_dir() and p.name != "training"):
            path = folder / f"{name}.json"
            if not path.exists():
                continue
            record = json.loads(path.read_text())
            result = next(iter(record["results"].values()))
            metric, value = kind_metric(task, result)
            lines.append(f"| {name} | {folder.name} | {metric} | {_cell(value, metric.endswith('mm'))} | {record.get('samples')} |")
    return lines


def _sax_dice(result: dict | None) -> str:
    if result is None:
        return "not run"
    d = result["dice"]
    return " / ".join(_cell(d[k]["mean"]) for k in ("lv_blood_pool", "lv_myocardium", "rv_blood_pool")) + \
        f" (mean {_cell(result['mean_dice'])})"


def _steps(root: Path, run: str) -> str:
    path = root / run / "acdc" / "seg_sax_cine.json"
    return str(json.loads(path.read_text()).get("steps", "?")) if path.exists() else "-"


def pretraining_table(root: Path) -> list[str]:
    """Full data, then every few-shot pair ``fewshot_<N>_dino[<suffix>]`` / ``fewshot_<N>_scratch[<suffix>]``
    (a suffix marks a variant, e.g. more steps), by N then steps."""
    lines = ["| training data (seg_sax_cine) | steps | from the pretrained encoder | from scratch |", "|---|---|---|---|"]
    rows = [("all (ACDC + synthetic train split)", "cmrfoundation", "scratch")]
    few_shot = []
    for folder in [*root.glob("fewshot_*_dino*"), *root.glob("fewshot_*_mim*")]:  # DINO or masked-image pretraining
        pretraining = "_dino" if "_dino" in folder.name else "_mim"
        n, suffix = folder.name.split(pretraining, 1)[0].split("_")[1], folder.name.split(pretraining, 1)[1]
        few_shot.append((int(n), _steps(root, folder.name), folder.name, f"fewshot_{n}_scratch{suffix}"))
    for n, _, pretrained, scratch in sorted(few_shot, key=lambda row: (row[0], int(row[1]) if row[1].isdigit() else 0)):
        rows.append((f"{n} ACDC patient{'s' if n > 1 else ''}", pretrained, scratch))
    for label, pretrained, scratch in rows:
        lines.append(f"| {label} | {_steps(root, pretrained)} | {_sax_dice(load_result(root, pretrained, 'acdc', 'seg_sax_cine'))} "
                     f"| {_sax_dice(load_result(root, scratch, 'acdc', 'seg_sax_cine'))} |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="results folder, e.g. Training/results/cpu_nano")
    parser.add_argument("--notes", help="a Markdown file whose text goes at the top (set-up, caveats)")
    parser.add_argument("--ours", default="comparison", help="run folder of the shipped weights' test numbers "
                        "(evaluate.py --out ROOT/RUN), also read for the every-task table")
    parser.add_argument("--baseline", default="comparison", help="run folder holding the ResNet50 baseline, "
                        "relative to ROOT (e.g. ../cpu_nano/comparison)")
    parser.add_argument("--before", help="run folder of the previous shipped set, for a row beside ours")
    args = parser.parse_args(argv)
    root = Path(args.root)
    lines = ["# CMRFoundation results", ""]
    if args.notes:
        lines += [Path(args.notes).read_text().strip(), ""]
    lines += ["## Against the anchors", "",
              "Dice on the ACDC and EMIDEC test splits (`Training/splits/`), per patient, on native pixels; RV "
              "insertion error in mm on the ACDC test slices; the published rows are the papers' own test sets.", "",
              *headline_table(root, measured_rows(args.ours, args.baseline, args.before)), "",
              "## Every task (shipped CPU weights, test splits)", "",
              *all_tasks_table(root, "cmrfoundation" if args.ours == "comparison" else args.ours), "",
              "## The value of pretraining", "",
              "Short-axis cine segmentation on the ACDC test split (Dice LV / myocardium / RV), the same finetuning "
              "from the pretrained encoder and from random initialisation; few-shot runs train on N ACDC training "
              "patients only (ED and ES, every slice) without validation-based selection.", "",
              *pretraining_table(root), ""]
    (root / "RESULTS.md").write_text("\n".join(lines))
    print(root / "RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
