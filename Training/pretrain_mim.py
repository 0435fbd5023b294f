"""Masked image modelling (SimMIM) pretraining of the hybrid encoder, resumable across sessions.

    python Training/pretrain_mim.py --config Training/configs/mim_hybrid_cpu.json \
        --checkpoint Training/checkpoints/mim_hybrid_cpu.pt --out runs/mim_hybrid [--resume] [--max-minutes 60]

Each image (every slice and frame under the config's ``data`` paths, as DINO's source
reads them) is pre-processed to the model grid, augmented (scale, rotation, intensity,
scanner appearance), cropped at random to ``crop`` pixels, and 60 % of its 16x16 token cells are blanked (set to 0, mid-grey on
the [-1, 1] scale). The encoder sees the blanked image; a linear layer turns each
last-block token back into its 16x16 pixels, and the loss is the L1 error on the blanked
cells only (Xie et al., SimMIM, CVPR 2022; CineMA pretrains its hybrid encoder the same
way, with an MAE decoder). The convolutional stages learn local appearance, the
transformer how the heart continues behind a hole.

The run is made for sessions with a time limit: ``--max-minutes`` (or SIGTERM / Ctrl-C)
ends it cleanly at the next step with a compact checkpoint (model, optimizer, step, data
order; ``cmrtrain.checkpoint``) written to ``--checkpoint`` every ``checkpoint_every_steps``
and at the end; ``--resume`` continues from it exactly where it stopped (same learning
rate schedule, same images in the same order). Every stop also exports the encoder to
``OUT/encoder.safetensors`` + ``encoder.json``, which finetuning starts from.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from CMRFoundationLib.models.hybrid import TOKEN_STRIDE, HybridEncoder, hybrid_config
from CMRFoundationLib.preprocess import PreprocessConfig, preprocess
from CMRFoundationLib.weights import save_encoder_weights
from cmrtrain.augment import (
    AppearanceConfig,
    AugmentConfig,
    random_appearance,
    random_intensity,
    random_rigid,
    random_spacing,
)
from cmrtrain.checkpoint import StopRequest, check_resume_settings, float32_state, load_compact, save_compact
from cmrtrain.dino import cosine_schedule, param_groups
from cmrtrain.distributed import ResumableSampler
from cmrtrain.unlabeled import UnlabeledImages

log = logging.getLogger("pretrain_mim")
REPO = Path(__file__).resolve().parent.parent

# Keys that may change between a run and its resumption without changing the training.
RUN_CONTROL_KEYS = {"description", "workers", "log_every", "checkpoint_every_steps", "threads"}


class MaskedImageModel(nn.Module):
    """The encoder and SimMIM's one-layer prediction head (a token -> its 16x16 pixels)."""

    def __init__(self, encoder: HybridEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.predict = nn.Linear(encoder.dim, TOKEN_STRIDE * TOKEN_STRIDE)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """L1 loss on the masked cells. ``mask`` [B, rows, cols] of the token grid, 1 = hidden."""
        pixel_mask = mask.repeat_interleave(TOKEN_STRIDE, 1).repeat_interleave(TOKEN_STRIDE, 2)[:, None]
        output = self.encoder(image * (1.0 - pixel_mask))
        tokens = output.patch_map(-1)  # [B, dim, rows, cols]
        pixels = F.pixel_shuffle(self.predict(tokens.permute(0, 2, 3, 1)).permute(0, 3, 1, 2), TOKEN_STRIDE)
        error = (pixels - image[:, :1]).abs() * pixel_mask
        return error.sum() / pixel_mask.sum().clamp(min=1.0)


class PretrainImages:
    """Pre-process + augment one unlabelled image into a [3, S, S] model-grid tensor."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.preprocessing = PreprocessConfig(**config["preprocess"])
        self.augment = AugmentConfig(**config["augment"])
        self.appearance = AppearanceConfig(**config["appearance"])
        self.mask_ratio = float(config["mask_ratio"])
        self.crop = int(config.get("crop") or self.preprocessing.size)
        self.seed, self.epoch = int(config["seed"]), 0

    def __call__(self, index: int, image: torch.Tensor, spacing: torch.Tensor) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        spacing = random_spacing(tuple(spacing.tolist()), self.augment, rng)
        model_image, _ = preprocess(np.repeat(image.numpy()[None], 3, axis=0), spacing, self.preprocessing)
        x = torch.from_numpy(np.ascontiguousarray(model_image, dtype=np.float32))
        x, _, _ = random_rigid(x, None, None, self.augment, rng)
        # A random crop (smaller than the finetuning grid) halves the cost of a step; the
        # position embedding is resized to the finetuning grid when a task starts from it.
        top, left = rng.integers(0, x.shape[-1] - self.crop + 1, size=2)
        x = x[:, top : top + self.crop, left : left + self.crop]
        x = random_appearance(random_intensity(x, self.augment, rng), None, self.appearance, rng)
        side = self.crop // TOKEN_STRIDE
        n_hidden = int(round(self.mask_ratio * side * side))
        mask = np.zeros(side * side, dtype=np.float32)
        mask[rng.permutation(side * side)[:n_hidden]] = 1.0
        return {"image": x, "mask": torch.from_numpy(mask.reshape(side, side))}


class _IndexedImages(torch.utils.data.Dataset):
    """UnlabeledImages items passed through PretrainImages with their index (for the random stream)."""

    def __init__(self, images: UnlabeledImages, transform: PretrainImages) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image, spacing = self.images[index]
        return self.transform(index, image, spacing)


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    config = json.loads(Path(path).read_text(encoding="utf-8"))
    for key in ("encoder", "data", "preprocess", "augment", "appearance", "mask_ratio", "optim", "epochs",
                "batch_size", "seed"):
        if key not in config:
            raise SystemExit(f"{path}: the config lacks {key!r}")
    return config


def _data_paths(config: dict[str, Any]) -> list[str]:
    """The config's data paths; relative ones are from the repository root (../shared/...)."""
    return [str(p if Path(p).is_absolute() else (REPO / p).resolve()) for p in config["data"]]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--checkpoint", required=True, help="compact checkpoint to write (and --resume from)")
    parser.add_argument("--out", required=True, help="run folder: log.jsonl, encoder.safetensors + encoder.json")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    parser.add_argument("--max-minutes", type=float, help="stop cleanly (with a checkpoint) after this long")
    parser.add_argument("--max-steps", type=int, help="stop after this many steps in total")
    parser.add_argument("--threads", type=int, help="torch threads (default: the config's, else torch's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stdout)
    config = load_config(args.config)
    threads = args.threads or config.get("threads")
    if threads:
        torch.set_num_threads(int(threads))
    with StopRequest(args.max_minutes) as stop:
        return pretrain(config, Path(args.checkpoint), Path(args.out), args.resume, args.max_steps, stop)


def pretrain(config: dict[str, Any], checkpoint_path: Path, out: Path, resume: bool, max_steps: int | None,
             stop: StopRequest) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = None
    if checkpoint_path.exists():
        if not resume:
            raise SystemExit(f"{checkpoint_path} exists: pass --resume to continue that run, or choose another --checkpoint")
        checkpoint = load_compact(checkpoint_path)
        check_resume_settings(checkpoint["config"], config, RUN_CONTROL_KEYS, checkpoint_path)

    images = UnlabeledImages(_data_paths(config), npz_spacing_mm=float(config.get("npz_spacing_mm", 1.5)))
    log.info("data: %s", images.describe())
    transform = PretrainImages(config)
    dataset = _IndexedImages(images, transform)
    batch_size = int(config["batch_size"])
    sampler = ResumableSampler(dataset, shuffle=True, seed=int(config["seed"]), drop_last=True)
    iters_per_epoch = sampler.num_samples // batch_size
    if iters_per_epoch == 0:
        raise SystemExit(f"only {len(dataset)} images: fewer than one batch of {batch_size}")
    workers = int(config.get("workers", 0))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=True)

    torch.manual_seed(int(config["seed"]))
    encoder_config = hybrid_config(config["encoder"], image_size=transform.crop,
                                   **config.get("encoder_overrides", {}))
    model = MaskedImageModel(HybridEncoder(encoder_config))
    optimizer = torch.optim.AdamW(param_groups(model))
    optim = config["optim"]
    epochs = int(config["epochs"])
    lr_schedule = cosine_schedule(optim["lr"] * batch_size / 256, optim["min_lr"], epochs, iters_per_epoch,
                                  warmup_epochs=optim["warmup_epochs"])
    total = epochs * iters_per_epoch
    step, elapsed_before, history = 0, 0.0, []
    if checkpoint is not None:
        if checkpoint["iters_per_epoch"] != iters_per_epoch:
            raise SystemExit(f"{checkpoint_path}: the run had {checkpoint['iters_per_epoch']} steps per epoch, "
                             f"this one {iters_per_epoch} (different data?); cannot resume exactly")
        model.load_state_dict(float32_state(checkpoint["model"]))
        optimizer.load_state_dict(checkpoint["optimizer"])
        step, elapsed_before = int(checkpoint["step"]), float(checkpoint["seconds"])
        history = list(checkpoint.get("history", []))
        log.info("resumed from %s at step %d of %d (epoch %d)", checkpoint_path, step, total, step // iters_per_epoch)
    end = min(total, max_steps) if max_steps else total
    log.info("SimMIM on %s (%.2fM parameters), %d steps per epoch, %d epochs, batch %d, stopping at step %d",
             config["encoder"], sum(p.numel() for p in model.encoder.parameters()) / 1e6, iters_per_epoch, epochs,
             batch_size, end)

    saved_at = [step]

    def save(reason: str) -> None:
        saved_at[0] = step
        seconds = elapsed_before + time.perf_counter() - started
        save_compact(checkpoint_path, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
            "iters_per_epoch": iters_per_epoch, "seconds": seconds, "history": history, "config": config,
        })
        _export(out, model.encoder, config, images, step, iters_per_epoch, seconds, history)
        log.info("checkpoint at step %d (%s): %s", step, reason, checkpoint_path)

    started = time.perf_counter()
    window: list[float] = []
    model.train()
    while step < end and not stop.requested:
        epoch = step // iters_per_epoch
        transform.epoch = epoch  # augmentation draws are keyed by (seed, epoch, index): a resume repeats them
        sampler.set_epoch(epoch, skip_batches=step % iters_per_epoch, batch_size=batch_size)
        for batch in loader:
            for group in optimizer.param_groups:
                group["lr"] = float(lr_schedule[step])
            if optimizer.param_groups:
                optimizer.param_groups[0]["weight_decay"] = float(optim["weight_decay"])
            loss = model(batch["image"], batch["mask"])
            if not math.isfinite(loss.item()):
                raise RuntimeError(f"loss is {loss.item()} at step {step}; stopping")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(optim["clip_grad"]))
            optimizer.step()
            step += 1
            window.append(float(loss.detach()))
            if step % int(config.get("log_every", 20)) == 0 or step == end:
                record = {"step": step, "epoch": round(step / iters_per_epoch, 3), "loss": round(float(np.mean(window)), 5),
                          "lr": float(lr_schedule[step - 1]),
                          "seconds": round(elapsed_before + time.perf_counter() - started, 1)}
                history.append(record)
                window = []
                log.info(json.dumps(record))
                with open(out / "log.jsonl", "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record) + "\n")
            if step % int(config.get("checkpoint_every_steps", 200)) == 0:
                save("periodic")
            if step >= end or stop.requested:
                break
    if saved_at[0] != step or checkpoint is None and step == 0:
        save("finished" if step >= total else (stop.reason if stop.requested else f"--max-steps {end}"))
    return {"step": step, "total": total}


def _export(out: Path, encoder: HybridEncoder, config: dict[str, Any], images: UnlabeledImages, step: int,
            iters_per_epoch: int, seconds: float, history: list[dict]) -> None:
    """The encoder as OUT/encoder.safetensors + encoder.json (what finetuning starts from)."""
    relative, sha256 = save_encoder_weights(out, encoder.state_dict(), name="encoder")
    manifest = {
        "kind": "cmrfoundation-encoder",
        "method": "SimMIM",
        "encoder_preset": config["encoder"],
        "encoder": encoder.config.to_dict(),
        "weights": relative,
        "sha256": sha256,
        "preprocess": config["preprocess"],
        "data_sources": config["data"],
        "n_images": len(images),
        "epochs": config["epochs"],
        "epochs_done": round(step / iters_per_epoch, 3),
        "steps": step,
        "cpu_seconds_wall": round(seconds),
        "final_loss": history[-1]["loss"] if history else None,
        "config": config,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (out / "encoder.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
