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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cmrtrain.finetune import FinetuneConfig, finetune  # noqa: E402


def parse_args(argv=None) -> FinetuneConfig:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--config", help="JSON with FinetuneConfig settings")
    parser.add_argument("--encoder", help="ViT preset (vit_nano, vit_tiny, vit_small, vit_base) or resnet50 (baseline)")
    parser.add_argument("--encoder-weights", help="DINO export, e.g. runs/dino/encoder.safetensors")
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
    args = vars(parser.parse_args(argv))
    values = json.loads(Path(args.pop("config")).read_text()) if args.get("config") else {}
    values.update({k: v for k, v in args.items() if v is not None and k != "config"})
    return FinetuneConfig.from_dict(values)


def main(argv=None) -> int:
    config = parse_args(argv)
    log_file = Path(config.out) / "log.txt"
    log_file.parent.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        print(message, flush=True)
        with log_file.open("a") as f:
            f.write(message + "\n")

    summary = finetune(config, log)
    log(f"done: {summary['steps']} steps, best validation {summary['best_val']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
