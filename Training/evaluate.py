"""Evaluate a task's weights (and baselines) on a fixed split, per data source.

    python Training/evaluate.py --task seg_sax_cine --weights Resources/Weights \
        --baseline-weights runs/resnet50/weights --myopari --out Training/results

Writes OUT/<task>.json and OUT/<task>.md (one table per data source: our model, the
ResNet50 baseline when given, myopari's ONNX model on ACDC/EMIDEC when asked), and with
--record also stores the test numbers in the weights manifest.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from CMRFoundationLib.inference import ImagePredictions, TaskPredictor
from CMRFoundationLib.tasks import get_task
from CMRFoundationLib.weights import record_evaluation
from cmrtrain.data import samples_for
from cmrtrain.evaluation import evaluate, kind_metric, markdown_table, write_results
from cmrtrain.finetune import DEFAULT_SOURCES

# myopari's models and the data each was trained for, with the slice orientation that
# matches its training data: the EMIDEC repack in ../shared is stored transposed
# relative to ACDC (checked against myopari's own code, see baselines/myopari.py).
MYOPARI_MODELS = {("seg_sax_cine", "acdc"): ("acdc", True), ("seg_lge", "emidec"): ("emidec", False)}


class MyopariPredictor:
    """myopari's ONNX model behind the predict_images interface."""

    def __init__(self, task_name: str, model: str, transpose: bool) -> None:
        from cmrtrain.baselines.myopari import MyopariSegmenter

        self.task_name = task_name
        self.segmenter = MyopariSegmenter(model, transpose=transpose)

    def predict_images(self, images: np.ndarray, spacing) -> ImagePredictions:
        return ImagePredictions(self.task_name, labels=self.segmenter.segment_for_task(images[:, 0], self.task_name))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--weights", help="weights folder (default: $CMRFM_WEIGHTS or Resources/Weights)")
    parser.add_argument("--baseline-weights", help="weights folder of the ResNet50 baseline for this task")
    parser.add_argument("--myopari", action="store_true", help="also evaluate myopari's ONNX model where one fits")
    parser.add_argument("--split", default="test")
    parser.add_argument("--sources", nargs="+", help="default: the task's training sources")
    parser.add_argument("--shared-root")
    parser.add_argument("--synthetic-root")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="Training/results")
    parser.add_argument("--record", action="store_true", help="store the test numbers in the weights manifest")
    args = parser.parse_args(argv)

    task = get_task(args.task)
    methods = {"CMRFoundation": TaskPredictor.load(task, args.weights, args.device)}
    if args.baseline_weights:
        methods["ResNet50 baseline"] = TaskPredictor.load(task, args.baseline_weights, args.device)
    results, meta_sources = {}, {}
    for source in args.sources or DEFAULT_SOURCES[task.name]:
        kwargs = {"synthetic_root": args.synthetic_root}
        if args.shared_root:
            kwargs["shared_root"] = Path(args.shared_root)
        samples = samples_for(task, [source], args.split, **kwargs)
        if not samples:
            print(f"{source}: no {args.split} samples (data absent?); skipped")
            continue
        per_method = dict(methods)
        if args.myopari and (task.name, source) in MYOPARI_MODELS:
            per_method["myopari (ONNX)"] = MyopariPredictor(task.name, *MYOPARI_MODELS[task.name, source])
        results[source] = {}
        for name, predictor in per_method.items():
            start = time.perf_counter()
            results[source][name] = evaluate(task, predictor, samples)
            metric, value = kind_metric(task, results[source][name])
            shown = "n/a" if value is None else f"{value:.4f}"
            print(f"{source} / {name}: {metric} {shown} ({time.perf_counter() - start:.0f} s)")
        meta_sources[source] = len(samples)
        print(markdown_table(task, results[source]))
    if not results:
        print("error: nothing was evaluated", file=sys.stderr)
        return 1
    weights = methods["CMRFoundation"].manifest
    meta = {"split": args.split, "samples": meta_sources,
            "weights": [f["sha256"][:12] for f in weights.get("files", [])],
            "preprocessing": weights.get("preprocessing")}
    for source, per_method in results.items():
        write_results(Path(args.out) / source, task, per_method, meta)
    if args.record:
        record_evaluation(args.weights, task.name, {s: r["CMRFoundation"] for s, r in results.items()}, split=args.split)
    return 0


if __name__ == "__main__":
    sys.exit(main())
