"""LGE presence on EMIDEC, three ways: the lge_presence model, the n-SD enhanced extent of
the analysis, and the two together (issue 12, item 5).

    python Training/evaluate_lge_presence.py --weights DIR [--emidec-root ../shared/data/emidec]
        [--out Training/results/cpu_hybrid/lge_presence] [--n-sd 5] [--threads 1]

Every EMIDEC case goes through ``analyze_study`` as a one-series study (the LGE role
forced, so the classifier's call does not matter): the product's own segmentation, AHA
segments, partial-volume guards and n-SD extent, and the presence model on the basal,
mid and apical slices the analysis picks. EMIDEC keeps no spacing: 1.5 mm pixels and
10 mm slices are assumed (the extent is a percentage, so they barely matter).

The extent's evidence is turned into a probability by a logistic curve fitted on the
train and validation cases; the combination averages that with the model's probability.
Cases are cached in OUT/cases.json (delete it to analyse again). Writes OUT/lge_presence.md
and .json: accuracy per split for each method, and the fitted curve, which is what the
analysis reads (``CMRFoundationLib/models/lge_presence_rule.py``) when it is copied
beside the weights.
EMIDEC: A. Lalande et al., Data 5(4), 2020.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from CMRFoundationLib.analysis import AnalysisOptions, analyze_study
from CMRFoundationLib.models.lge_presence_rule import LgePresenceRule, fit_extent_curve
from CMRFoundationLib.stack import ImageStack, SeriesInfo
from cmrtrain.data.emidec import emidec_cases, load_emidec_case
from cmrtrain.data.splits import load_split

HERE = Path(__file__).resolve().parent

SPACING_MM, SLICE_MM = 1.5, 10.0


def emidec_stack(image: np.ndarray, case: str) -> ImageStack:
    """A one-frame short-axis LGE stack with the assumed spacing (EMIDEC keeps none)."""
    affine = np.diag([SPACING_MM, SPACING_MM, SLICE_MM, 1.0])
    info = SeriesInfo(series_number=1, series_description=f"EMIDEC {case} LGE", patient_id=case)
    return ImageStack(image[:, None].astype(np.float32), affine, info,
                      slice_positions=np.arange(len(image)) * SLICE_MM)


def analyse_case(image: np.ndarray, case: str, weights: str, n_sd: float) -> dict:
    options = AnalysisOptions(weights_dir=weights, device="cpu", series={"lge_sax": 1}, lge_n_sd=n_sd)
    analysis = analyze_study([emidec_stack(image, case)], options)
    presence, extent = analysis.parts["lge_presence"], analysis.parts["lge_extent"]
    row = {"model_p_present": None, "extent_percent": None, "problems": []}
    if presence.results:
        row["model_p_present"] = presence.results["probabilities"]["present"]
    if extent.results:
        row["extent_percent"] = extent.results["extent"]["enhanced_percent"]
    for part in (presence, extent):
        if part.reason:
            row["problems"].append(f"{part.name} {part.status}: {part.reason}")
    return row


def accuracy(calls: list[bool | None], truth: list[bool]) -> dict:
    """Accuracy over the cases a method could call, and how many it could not."""
    pairs = [(c, t) for c, t in zip(calls, truth) if c is not None]
    right = sum(c == t for c, t in pairs)
    absent = [c == t for c, t in pairs if not t]
    present = [c == t for c, t in pairs if t]
    return {"n": len(pairs), "no_call": len(calls) - len(pairs), "accuracy": right / len(pairs) if pairs else None,
            "absent": float(np.mean(absent)) if absent else None, "present": float(np.mean(present)) if present else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="weights folder (seg_lge, lge_presence, rv_insertion)")
    parser.add_argument("--emidec-root", default=str(HERE.parent.parent / "shared" / "data" / "emidec"))
    parser.add_argument("--out", default=str(HERE / "results" / "cpu_hybrid" / "lge_presence"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-sd", type=float, default=AnalysisOptions().lge_n_sd, help="the extent's threshold")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    root, out = Path(args.emidec_root), Path(args.out)
    if not (root / "cases.json").exists():
        print(f"no EMIDEC data at {root}: nothing to evaluate")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    truth = emidec_cases(root)
    split_of = {case: name for name, cases in load_split("emidec").items() for case in cases}
    cache_path = out / "cases.json"
    cases = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    for n, case in enumerate(sorted(truth)):
        if case in cases:
            continue
        image, _ = load_emidec_case(root, case)
        cases[case] = {"split": split_of.get(case), "present": truth[case], **analyse_case(image, case, args.weights, args.n_sd)}
        print(f"{n + 1}/{len(truth)} {case}: {cases[case]}", flush=True)
        cache_path.write_text(json.dumps(cases, indent=1))

    fit_on = [c for c in cases.values() if c["split"] in ("train", "val") and c["extent_percent"] is not None]
    curve = fit_extent_curve([c["extent_percent"] for c in fit_on], [c["present"] for c in fit_on])
    rule = LgePresenceRule(*curve, source="EMIDEC train + validation cases, weights " + Path(args.weights).name)
    methods = {
        "presence model": lambda c: None if c["model_p_present"] is None else c["model_p_present"] >= 0.5,
        f"extent ({rule.describe()})": lambda c: None if c["extent_percent"] is None
        else rule.extent_probability(c["extent_percent"]) >= 0.5,
        "model + extent (mean probability)": lambda c: None if c["model_p_present"] is None
        else rule.combined(c["model_p_present"], c["extent_percent"]) >= 0.5,
    }
    table = {}
    for split in ("test", "train", "val"):
        chosen = [c for c in cases.values() if c["split"] == split]
        table[split] = {name: accuracy([call(c) for c in chosen], [c["present"] for c in chosen])
                        for name, call in methods.items()}
    rule.save(out / "lge_presence_rule.json")
    (out / "lge_presence.json").write_text(json.dumps({"weights": str(args.weights), "rule": rule.to_dict(),
                                                       "accuracy": table}, indent=1))
    lines = ["# LGE presence on EMIDEC: model, extent, both", "",
             f"Weights: `{args.weights}`; EMIDEC (Lalande et al., Data 2020), {len(cases)} cases through "
             f"`analyze_study` as one-series studies, extent at {args.n_sd:g} SD; {SPACING_MM} mm pixels and {SLICE_MM:g} mm slices assumed. "
             f"Extent curve fitted on {len(fit_on)} train + validation cases: {rule.describe()}.", ""]
    for split, rows in table.items():
        lines += [f"## {split}", "", "| method | n | no call | accuracy | absent | present |", "|---|---|---|---|---|---|"]
        for name, acc in rows.items():
            fmt = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
            lines.append(f"| {name} | {acc['n']} | {acc['no_call']} | {fmt(acc['accuracy'])} | "
                         f"{fmt(acc['absent'])} | {fmt(acc['present'])} |")
        lines.append("")
    (out / "lge_presence.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
