"""Train the CPU weight set the project carries (all nine tasks), then evaluate it.

    python Training/train_cpu_weights.py --synthetic-root runs/synthetic --out Resources/Weights \
        --encoder-weights runs/dino_nano/encoder.safetensors

Each task is finetuned with --config (default configs/finetune_cpu_tiny.json: vit_nano,
2 mm grid of 112x112; configs/finetune_hybrid_cpu.json: the hybrid encoder on the 1.25 mm
grid) for a fixed number of steps (the config's "steps", else STEPS; --steps TASK=N
changes one), written to OUT as safetensors + manifest, and evaluated on the test split
of each of its sources; the numbers go into the manifest and into
RESULTS/<source>/<task>.json|md under the name --method.

Runs longer than a session: with --checkpoints DIR each task keeps a compact resumable
checkpoint DIR/<task>.pt; --max-minutes stops the whole run cleanly (the running task
writes its checkpoint and its best weights so far, and is not evaluated); the same
command with --resume continues where it stopped, skipping finished tasks. The same script trains the comparisons recorded in Training/results/cpu_nano:
the ResNet50 baseline (--encoder resnet50), the encoder from scratch (no
--encoder-weights) and few-shot runs (--few-shot N). The full-size weights come from
configs/finetune_vit_small.json on a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from CMRFoundationLib.inference import TaskPredictor
from CMRFoundationLib.tasks import TASKS, get_task
from CMRFoundationLib.weights import record_evaluation
from cmrtrain.checkpoint import StopRequest
from cmrtrain.data import samples_for
from cmrtrain.evaluation import evaluate, kind_metric, write_results
from cmrtrain.finetune import DEFAULT_SOURCES, FinetuneConfig, finetune

HERE = Path(__file__).resolve().parent

# Training steps (batch 16) per task: what a 2-core CPU session affords. Dense tasks cost
# about 1 s a step, classifiers about 0.3 s (the stack classifiers see few samples and get
# many epochs; the best validation state is kept).
STEPS = {
    "seg_sax_cine": 1000, "seg_lge": 300, "rv_insertion": 500, "seg_4ch_cine": 200, "seg_mapping": 200,
    "image_type": 600, "cine_view": 600, "lge_presence": 1000, "disease": 1000,
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(HERE.parent / "Resources" / "Weights"), help="weights folder")
    parser.add_argument("--synthetic-root", required=True)
    parser.add_argument("--encoder-weights", help="DINO export to start from (none: from scratch)")
    parser.add_argument("--encoder", help="override the config's encoder, e.g. resnet50 for the baseline")
    parser.add_argument("--method", default="CMRFoundation (CPU)", help="name of this model in the results tables")
    parser.add_argument("--few-shot", type=int, help="train on N cases (dense) / N samples per class")
    parser.add_argument("--sources", nargs="+", help="train on these sources only (default: the task's)")
    parser.add_argument("--no-val", action="store_true", help="no validation: keep the last state (few-shot runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default="runs/cpu_weights", help="run folders (logs, summaries)")
    parser.add_argument("--results", default=str(HERE / "results" / "cpu_nano" / "cmrfoundation"))
    parser.add_argument("--steps", nargs="+", default=[], metavar="TASK=N", help="change a task's step count")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--config", default=str(HERE / "configs" / "finetune_cpu_tiny.json"))
    parser.add_argument("--checkpoints", help="folder of per-task resumable checkpoints (e.g. Training/checkpoints/hybrid_cpu)")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoints; finished tasks are skipped")
    parser.add_argument("--max-minutes", type=float, help="stop the whole run cleanly after this long")
    args = parser.parse_args(argv)

    base = json.loads(Path(args.config).read_text())
    base.pop("description", None)
    steps = dict(base.pop("steps", STEPS))
    task_overrides = base.pop("task_overrides", {})  # e.g. full rotation for the view classifier
    for item in args.steps:
        name, _, count = item.partition("=")
        get_task(name)
        steps[name] = int(count)
    if args.encoder:
        base["encoder"] = args.encoder
    described = (f"{base['encoder']}, {base['spacing_mm']:g} mm, {base['size']} px, "
                 f"{'pretrained ' + Path(args.encoder_weights).parent.name if args.encoder_weights else 'from scratch'}"
                 f"{f', few-shot {args.few_shot}' if args.few_shot else ''}")
    stop = StopRequest(args.max_minutes).__enter__()
    for name in args.tasks:
        task = get_task(name)
        start = time.perf_counter()
        checkpoint = str(Path(args.checkpoints) / f"{name}.pt") if args.checkpoints else None
        config = FinetuneConfig.from_dict({
            **base, **task_overrides.get(name, {}), "task": name, "out": str(Path(args.runs) / name), "synthetic_root": args.synthetic_root,
            "encoder_weights": args.encoder_weights, "weights_out": args.out, "workers": 0,
            "epochs": base.get("epochs", 1000), "max_steps": steps[name], "few_shot": args.few_shot, "seed": args.seed,
            "sources": args.sources, "val_split": None if args.no_val else "val", "checkpoint": checkpoint,
        })
        if args.resume and (Path(args.runs) / name / "summary.json").exists():
            done = json.loads((Path(args.runs) / name / "summary.json").read_text())
            if done.get("finished") and done.get("steps") == steps[name]:
                print(f"[{name}] finished in an earlier run: skipped", flush=True)
                continue
        summary = finetune(config, log=lambda m: print(f"[{name}] {m}", flush=True), resume=args.resume, stop=stop)  # noqa: B023
        if not summary["finished"]:
            print(f"[{name}] stopped at step {summary['steps']} of {summary['total_steps']}; not evaluated. "
                  "Run the same command with --resume to continue.", flush=True)
            break
        train_seconds = summary["train_seconds"]
        log_folder = Path(args.results) / "training"  # config and per-epoch history, kept with the results
        log_folder.mkdir(parents=True, exist_ok=True)
        (log_folder / f"{name}.json").write_text(json.dumps(summary, indent=1, default=str))
        predictor = TaskPredictor.load(task, args.out, "cpu")
        recorded = {}
        for source in args.sources or DEFAULT_SOURCES[name]:
            samples = samples_for(task, [source], "test", synthetic_root=args.synthetic_root)
            if not samples:
                continue
            recorded[source] = evaluate(task, predictor, samples)
            meta = {"split": "test", "samples": len(samples), "model": described, "train_samples": summary["n_train"],
                    "steps": summary["steps"], "train_seconds": round(train_seconds)}
            write_results(Path(args.results) / source, task, {args.method: recorded[source]}, meta)
            metric, value = kind_metric(task, recorded[source])
            print(f"[{name}] test {source}: {metric} {'n/a' if value is None else f'{value:.3f}'}", flush=True)
        record_evaluation(args.out, name, recorded, split="test")
        print(f"[{name}] done in {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
