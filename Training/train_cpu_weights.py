"""Train the small CPU weight set the project carries (all nine tasks), then evaluate it.

    python Training/train_cpu_weights.py --synthetic-root runs/synthetic --out Resources/Weights \
        --encoder-weights runs/dino_tiny/encoder.safetensors

Each task is finetuned with configs/finetune_cpu_tiny.json (vit_nano, 2 mm grid of
112x112) for a fixed number of steps, written to OUT as safetensors + manifest, and
evaluated on the test split of each of its sources; the numbers go into the manifest and
into Training/results/cpu_tiny/. These weights exist to exercise the whole tool chain on
any machine; the full-size weights come from configs/finetune_vit_small.json on a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cmrtrain.data import samples_for  # noqa: E402
from cmrtrain.evaluation import evaluate, kind_metric, write_results  # noqa: E402
from cmrtrain.finetune import DEFAULT_SOURCES, FinetuneConfig, finetune  # noqa: E402

from CMRFoundationLib.inference import TaskPredictor  # noqa: E402
from CMRFoundationLib.tasks import TASKS, get_task  # noqa: E402
from CMRFoundationLib.weights import record_evaluation  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(HERE.parent / "Resources" / "Weights"))
    parser.add_argument("--synthetic-root", required=True)
    parser.add_argument("--encoder-weights", help="DINO export to start from (vit_nano)")
    parser.add_argument("--runs", default="runs/cpu_weights", help="run folders (logs, summaries)")
    parser.add_argument("--results", default=str(HERE / "results" / "cpu_tiny"))
    parser.add_argument("--dense-steps", type=int, default=150)
    parser.add_argument("--class-steps", type=int, default=80)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    args = parser.parse_args(argv)

    base = json.loads((HERE / "configs" / "finetune_cpu_tiny.json").read_text())
    for name in args.tasks:
        task = get_task(name)
        start = time.perf_counter()
        config = FinetuneConfig.from_dict({
            **base, "task": name, "out": str(Path(args.runs) / name), "synthetic_root": args.synthetic_root,
            "encoder_weights": args.encoder_weights, "weights_out": args.out, "workers": 0, "epochs": 1000,
            "max_steps": args.dense_steps if task.is_dense else args.class_steps,
        })
        finetune(config, log=lambda m: print(f"[{name}] {m}", flush=True))
        predictor = TaskPredictor.load(task, args.out, "cpu")
        recorded = {}
        for source in DEFAULT_SOURCES[name]:
            samples = samples_for(task, [source], "test", synthetic_root=args.synthetic_root)
            if not samples:
                continue
            recorded[source] = evaluate(task, predictor, samples)
            write_results(Path(args.results) / source, task, {"CMRFoundation (CPU tiny)": recorded[source]},
                          {"split": "test", "samples": len(samples), "weights": "cpu tiny (vit_nano, 2 mm, 112 px)"})
            metric, value = kind_metric(task, recorded[source])
            print(f"[{name}] test {source}: {metric} {'n/a' if value is None else f'{value:.3f}'}", flush=True)
        record_evaluation(args.out, name, recorded, split="test")
        print(f"[{name}] done in {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
