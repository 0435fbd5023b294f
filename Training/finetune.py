"""Finetune the foundation encoder for one task.

    python Training/finetune.py --task seg_sax_cine --config Training/configs/finetune_vit_small.json \
        --encoder-weights runs/dino/encoder.safetensors --out runs/seg_sax_cine

Multi-GPU: torchrun --nproc_per_node=G Training/finetune.py ... (see Training/README.md).
Settings come from the config JSON (see cmrtrain.finetune.FinetuneConfig), then the
command line. The run folder gets log, summary.json and weights/ (safetensors + manifest).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cmrtrain.checkpoint import StopRequest
from cmrtrain.finetune import FinetuneConfig, finetune


def parse_args(argv=None) -> tuple[FinetuneConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--config", help="JSON with FinetuneConfig settings")
    parser.add_argument("--encoder", help="ViT or hybrid preset (vit_nano ... vit_base, hybrid_small) or resnet50 (baseline)")
    parser.add_argument("--encoder-weights", help="pretraining export, e.g. runs/mim_hybrid/encoder.safetensors")
    parser.add_argument("--mode", choices=["full", "frozen", "lora"])
    parser.add_argument("--lora-rank", type=int)
    parser.add_argument("--sources", nargs="+", help="acdc emidec synthetic (default: per task)")
    parser.add_argument("--shared-root", help="folder with acdc/ and emidec/ (default ../shared/data)")
    parser.add_argument("--synthetic-root", help="folder of synthetic studies (build it with: cd Training && python -m cmrtrain.data.build_synthetic ROOT --count N)")
    parser.add_argument("--label-folder", action="append", dest="label_folders", help="label folder exported from Slicer (repeatable)")
    parser.add_argument("--few-shot", type=int, help="N labelled samples per class (N cases for segmentation/landmarks)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--device")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--weights-out", help="also write the task's weights into this folder (e.g. a weights set)")
    parser.add_argument("--checkpoint", help="compact resumable checkpoint, e.g. Training/checkpoints/seg_sax_cine.pt")
    parser.add_argument("--checkpoint-every-steps", type=int)
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    parser.add_argument("--max-minutes", type=float, help="stop cleanly (checkpoint + weights) after this long")
    namespace = parser.parse_args(argv)
    args = {k: v for k, v in vars(namespace).items() if k not in ("resume", "max_minutes")}
    values = json.loads(Path(args.pop("config")).read_text()) if args.get("config") else {}
    values.pop("description", None)
    values.update({k: v for k, v in args.items() if v is not None and k != "config"})
    return FinetuneConfig.from_dict(values), namespace


def main(argv=None) -> int:
    config, args = parse_args(argv)
    log_file = Path(config.out) / "log.txt"
    log_file.parent.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        print(message, flush=True)
        with log_file.open("a") as f:
            f.write(message + "\n")

    with StopRequest(args.max_minutes) as stop:
        summary = finetune(config, log, resume=args.resume, stop=stop)
    state = "done" if summary["finished"] else "stopped"
    log(f"{state}: {summary['steps']} of {summary['total_steps']} steps, best validation {summary['best_val']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
