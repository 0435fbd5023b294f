"""Benchmark training and inference throughput (images/s) of the task models.

Measures, side by side in one run on one machine, the segmentation model of
seg_sax_cine (the heaviest task) in the configurations the project trains:

* the CPU weight set: the hybrid encoder (convolutions at full resolution, transformer on
  1/16 tokens) + U-Net decoder on the 1.25 mm / 176 px grid, and before it the vit_nano
  encoder + narrow UNETR decoder on the 2 mm / 112 px grid;
* the method's full size: ViT-S/8 + UNETR decoder on the 1 mm / 224 px grid;
* the ResNet50 U-Net baseline, on both grids.

Training = forward, Dice + cross-entropy loss, backward and an AdamW step on a batch of
random images and labels; inference = forward under ``torch.inference_mode``. Times are
medians over repeats after warm-up. On CUDA both run under bf16 autocast (as the
training and inference code do); on CPU in float32. Results go to
``Testing/Benchmarks/results/model_throughput_<device>.md``.

    python Testing/Benchmarks/bench_model_throughput.py [--device cpu|cuda] [--batch 16] [--repeats 5]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from CMRFoundationLib.models import build_model
from CMRFoundationLib.tasks import get_task
from cmrtrain.losses import loss_for

RESULTS = Path(__file__).parent / "results"
CPU_DECODER = (16, 32, 64, 96)  # configs/finetune_cpu_tiny.json
# (name, encoder, image size, decoder widths, grid); the first row is the reference of the ratios.
MODELS = [
    ("vit_nano + narrow UNETR (CPU set until 2026-12)", "vit_nano", 112, CPU_DECODER, "2 mm, 112 px"),
    ("hybrid_small + U-Net (CPU set)", "hybrid_small", 176, None, "1.25 mm, 176 px"),
    ("ResNet50 U-Net", "resnet50", 112, None, "2 mm, 112 px"),
    ("ViT-S/8 + UNETR (full size)", "vit_small", 224, None, "1 mm, 224 px"),
    ("ResNet50 U-Net", "resnet50", 224, None, "1 mm, 224 px"),
]


def _median_seconds(step, repeats: int, device: str) -> float:
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(encoder: str, size: int, decoder, batch: int, repeats: int, device: str) -> dict:
    task = get_task("seg_sax_cine")
    torch.manual_seed(0)
    model = build_model(task, encoder, image_size=size, decoder_features=decoder).to(device)
    loss_fn = loss_for(task, spacing_mm=224.0 / size)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(batch, 3, size, size, device=device)
    labels = torch.randint(0, len(task.labels), (batch, size, size), device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else contextlib.nullcontext()

    def train_step():
        optimiser.zero_grad(set_to_none=True)
        with autocast:
            loss = loss_fn(model(images), labels)
        loss.backward()
        optimiser.step()

    def infer_step():
        with torch.inference_mode(), autocast:
            model(images)

    model.train()
    train_step()  # warm-up (allocations, kernel selection)
    train_s = _median_seconds(train_step, repeats, device)
    model.eval()
    infer_step()
    infer_s = _median_seconds(infer_step, repeats, device)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    return {
        "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "train_images_s": batch / train_s,
        "infer_images_s": batch / infer_s,
        "peak_gpu_gib": peak,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-full-size", action="store_true", help="only the CPU-sized models")
    args = parser.parse_args(argv)

    rows = []
    for name, encoder, size, decoder, grid in MODELS:
        if args.skip_full_size and size > 176:
            continue
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        result = measure(encoder, size, decoder, args.batch, args.repeats, args.device)
        rows.append((name, grid, result))
        print(f"{name} @ {size} px: train {result['train_images_s']:.1f} img/s, "
              f"inference {result['infer_images_s']:.1f} img/s", flush=True)

    if args.device == "cuda":
        machine = torch.cuda.get_device_name(0)
        precision = "bf16 autocast"
    else:
        machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
        precision = "float32"
    reference = rows[0][2]
    lines = [
        "# Model throughput (seg_sax_cine model)", "",
        f"- date: {datetime.date.today()}", f"- machine: {machine}", f"- torch {torch.__version__}, {precision}",
        f"- batch {args.batch}, median of {args.repeats} repeats after one warm-up; "
        "training = forward + Dice/CE loss + backward + AdamW step", "",
        "| model | grid | parameters (M) | training (images/s) | inference (images/s) | inference vs CPU set |"
        + (" peak GPU memory (GiB) |" if args.device == "cuda" else ""),
        "|---|---|---|---|---|---|" + ("---|" if args.device == "cuda" else ""),
    ]
    for name, grid, r in rows:
        line = (f"| {name} | {grid} | {r['parameters_m']:.1f} | {r['train_images_s']:.1f} | {r['infer_images_s']:.1f} "
                f"| {r['infer_images_s'] / reference['infer_images_s']:.2f} |")
        if args.device == "cuda":
            line += f" {r['peak_gpu_gib']:.1f} |"
        lines.append(line)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"model_throughput_{args.device}.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
