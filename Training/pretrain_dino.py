"""DINO self-supervised pretraining of the ViT encoder on unlabeled cardiac MR images.

    python Training/pretrain_dino.py --config Training/configs/dino_vit_small.json \\
        --data DATA [DATA ...] --out RUN_DIR [--resume] [--epochs N] [--batch-size N] \\
        [--device cpu|cuda] [--max-steps N] [--workers N]

Several GPUs / nodes: the same command under ``torchrun --nproc_per_node=G [--nnodes=N
--node_rank=R --master_addr=HOST --master_port=PORT]``; the student is wrapped in DDP,
the teacher (an EMA of the student, never back-propagated) is not.

RUN_DIR receives ``checkpoint.pt`` (full training state, every epoch and every
``checkpoint_every_steps``; ``--resume`` continues from it with the same step counter and
schedules), ``log.jsonl`` (loss, lr, weight decay, teacher momentum and temperature every
``log_every`` steps) and, at the end, the teacher's encoder as ``encoder.safetensors``
with ``encoder.json`` (encoder config, data, steps, final loss, SHA-256), which
finetuning starts from.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from CMRFoundationLib.files import atomic_write
from CMRFoundationLib.models.vit import ViTEncoder, vit_config
from CMRFoundationLib.weights import save_encoder_weights
from cmrtrain import distributed
from cmrtrain.checkpoint import StopRequest, check_resume_settings
from cmrtrain.dino import (
    DINOHead,
    DINOLoss,
    MultiCropAugment,
    MultiCropWrapper,
    cancel_last_layer_gradients,
    cosine_schedule,
    param_groups,
    update_teacher,
)
from cmrtrain.unlabeled import PretrainTransform, UnlabeledImages

log = logging.getLogger("pretrain_dino")

# Every config key with its default (the full-size ViT-S/8 setup). Nested sections merge.
DEFAULT_CONFIG: dict[str, Any] = {
    "description": "",
    "encoder": "vit_small",
    "encoder_overrides": {"drop_path": 0.1},  # ViTConfig fields; image_size defaults to crops.global_size
    "head": {"out_dim": 65536, "hidden_dim": 2048, "bottleneck_dim": 256, "norm_last_layer": True},
    "preprocess": {"spacing_mm": 1.0, "size": 256, "percentile": 98.0},
    "crops": {
        "global_size": 224,
        "local_size": 96,
        "n_local": 10,
        "global_scale": [0.4, 1.0],
        "local_scale": [0.05, 0.4],
        "rotation_deg": 15.0,
        "flip_p": 0.0,
    },
    "loss": {
        "warmup_teacher_temp": 0.04,
        "teacher_temp": 0.07,
        "warmup_teacher_temp_epochs": 30,
        "student_temp": 0.1,
        "center_momentum": 0.9,
    },
    "optim": {
        "lr": 0.0005,  # at a total batch of 256; scaled linearly by batch_size * world_size / 256
        "min_lr": 1e-6,
        "warmup_epochs": 10,
        "weight_decay": 0.04,
        "weight_decay_end": 0.4,
        "momentum_teacher": 0.996,  # cosine to 1 over training
        "clip_grad": 3.0,  # max global gradient norm; 0 disables
        "freeze_last_layer_epochs": 1,
    },
    "data": {"npz_spacing_mm": 1.5, "cache_mb": 256},
    "epochs": 100,
    "batch_size": 64,  # per GPU
    "workers": 10,  # DataLoader workers per GPU
    "precision": "bf16",  # bf16 | fp16 (with GradScaler) | fp32; CUDA only, CPU always runs fp32
    "seed": 0,
    "log_every": 20,
    "checkpoint_every_steps": 1000,
}

# Keys that may change between a run and its resumption without changing the training.
RUN_CONTROL_KEYS = {"description", "workers", "log_every", "checkpoint_every_steps"}


def load_config(path: str | os.PathLike | None) -> dict[str, Any]:
    """DEFAULT_CONFIG updated with the JSON file at ``path``; unknown keys are an error (typos)."""
    config = copy.deepcopy(DEFAULT_CONFIG)
    if path is None:
        return config
    try:
        user = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read config ({exc})") from exc
    if not isinstance(user, dict):
        raise ValueError(f"{path}: config must be a JSON object")
    for key, value in user.items():
        if key not in config:
            raise ValueError(f"{path}: unknown config key {key!r}; known: {', '.join(config)}")
        if isinstance(config[key], dict) and key != "encoder_overrides":
            if not isinstance(value, dict):
                raise ValueError(f"{path}: {key!r} must be an object")
            unknown = set(value) - set(config[key])
            if unknown:
                raise ValueError(f"{path}: unknown keys in {key!r}: {sorted(unknown)}; known: {sorted(config[key])}")
            config[key].update(value)
        else:
            config[key] = value
    if config["precision"] not in ("bf16", "fp16", "fp32"):
        raise ValueError(f"{path}: precision must be bf16, fp16 or fp32, got {config['precision']!r}")
    return config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="JSON config (see Training/configs); defaults to the ViT-S/8 setup")
    parser.add_argument("--data", nargs="+", required=True,
                        help="folders or files: npz, NIfTI/NRRD, DICOM study folders (mixed freely)")
    parser.add_argument("--out", required=True, help="run folder for checkpoint, log and exported encoder")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument("--epochs", type=int, help="override the config's epochs")
    parser.add_argument("--batch-size", type=int, help="override the config's batch size per GPU")
    parser.add_argument("--workers", type=int, help="override the config's DataLoader workers per GPU")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    parser.add_argument("--max-steps", type=int, help="stop (checkpoint and export) once this many steps are done in total")
    parser.add_argument("--max-minutes", type=float, help="stop (checkpoint and export) after this long, or on SIGTERM")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run (or resume) pretraining; returns the exported encoder's manifest."""
    args = parse_args(argv)
    config = load_config(args.config)
    for key, value in (("epochs", args.epochs), ("batch_size", args.batch_size), ("workers", args.workers)):
        if value is not None:
            config[key] = value
    device = distributed.init_distributed(args.device)
    try:
        with StopRequest(args.max_minutes) as stop:
            return _train(args, config, device, stop)
    finally:
        distributed.cleanup()


def _train(args: argparse.Namespace, config: dict[str, Any], device: torch.device,
           stop: StopRequest | None = None) -> dict[str, Any]:
    stop = stop or StopRequest()
    out = Path(args.out)
    checkpoint_path = out / "checkpoint.pt"
    if distributed.is_main():
        out.mkdir(parents=True, exist_ok=True)
        _setup_logging(out)
    checkpoint = None
    if checkpoint_path.exists():
        if not args.resume:
            raise SystemExit(f"{checkpoint_path} exists: pass --resume to continue that run, or choose another --out")
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        check_resume_settings(checkpoint["config"], config, RUN_CONTROL_KEYS, checkpoint_path)
    elif args.resume:
        log.info("--resume: no checkpoint in %s yet, starting from scratch", out)

    crops_cfg, loss_cfg, optim_cfg = config["crops"], config["loss"], config["optim"]
    world = distributed.world_size()

    # --- data ---------------------------------------------------------------------------
    views = MultiCropAugment(
        global_size=crops_cfg["global_size"],
        local_size=crops_cfg["local_size"],
        n_local=crops_cfg["n_local"],
        global_scale=tuple(crops_cfg["global_scale"]),
        local_scale=tuple(crops_cfg["local_scale"]),
        rotation_deg=crops_cfg["rotation_deg"],
        flip_p=crops_cfg["flip_p"],
    )
    transform = PretrainTransform(views, **config["preprocess"])
    dataset = UnlabeledImages(args.data, transform=transform, npz_spacing_mm=config["data"]["npz_spacing_mm"],
                              cache_mb=config["data"]["cache_mb"])
    log.info("data: %s", dataset.describe())
    batch_size = config["batch_size"]
    sampler = distributed.ResumableSampler(dataset, shuffle=True, seed=config["seed"], drop_last=True)
    iters_per_epoch = sampler.num_samples // batch_size
    if iters_per_epoch == 0:
        raise SystemExit(f"only {len(dataset)} images in {args.data}: fewer than one batch "
                         f"({batch_size} per process x {world} processes)")
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=config["workers"],
                        pin_memory=device.type == "cuda", drop_last=True,
                        persistent_workers=config["workers"] > 0)

    # --- models ---------------------------------------------------------------------------
    torch.manual_seed(config["seed"])  # same initial student on every rank (DDP also broadcasts it)
    overrides = {"image_size": crops_cfg["global_size"], **config["encoder_overrides"]}
    student_cfg = vit_config(config["encoder"], **overrides)
    teacher_cfg = vit_config(student_cfg, drop_path=0.0)  # the teacher never drops paths
    head_cfg = config["head"]
    student = MultiCropWrapper(ViTEncoder(student_cfg), DINOHead(student_cfg.dim, **head_cfg)).to(device)
    teacher = MultiCropWrapper(ViTEncoder(teacher_cfg), DINOHead(teacher_cfg.dim, **head_cfg)).to(device)
    teacher.load_state_dict(student.state_dict())
    teacher.requires_grad_(False)

    dino_loss = DINOLoss(
        head_cfg["out_dim"],
        views.n_crops,
        warmup_teacher_temp=loss_cfg["warmup_teacher_temp"],
        teacher_temp=loss_cfg["teacher_temp"],
        warmup_epochs=loss_cfg["warmup_teacher_temp_epochs"],
        student_temp=loss_cfg["student_temp"],
        center_momentum=loss_cfg["center_momentum"],
    ).to(device)
    optimizer = torch.optim.AdamW(param_groups(student))
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config["precision"])
    use_amp = device.type == "cuda" and amp_dtype is not None
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and amp_dtype == torch.float16)

    # --- schedules (one value per step) ---------------------------------------------------
    epochs = config["epochs"]
    lr_schedule = cosine_schedule(optim_cfg["lr"] * batch_size * world / 256, optim_cfg["min_lr"], epochs,
                                  iters_per_epoch, warmup_epochs=optim_cfg["warmup_epochs"])
    wd_schedule = cosine_schedule(optim_cfg["weight_decay"], optim_cfg["weight_decay_end"], epochs, iters_per_epoch)
    momentum_schedule = cosine_schedule(optim_cfg["momentum_teacher"], 1.0, epochs, iters_per_epoch)

    step = 0
    last_loss = float("nan")
    if checkpoint is not None:
        if checkpoint["iters_per_epoch"] != iters_per_epoch:
            raise SystemExit(
                f"{checkpoint_path}: the run had {checkpoint['iters_per_epoch']} steps per epoch, this one has "
                f"{iters_per_epoch} (different data, batch size or number of processes); cannot resume exactly"
            )
        student.load_state_dict(checkpoint["student"])
        teacher.load_state_dict(checkpoint["teacher"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scaler.load_state_dict(checkpoint["scaler"])
        dino_loss.load_state_dict(checkpoint["loss"])
        step, last_loss = checkpoint["step"], checkpoint["last_loss"]
        log.info("resumed from %s at step %d (epoch %d)", checkpoint_path, step, step // iters_per_epoch)
    # Augmentation randomness differs per rank, and a resumed run does not replay the same draws.
    torch.manual_seed(config["seed"] + 1000 * distributed.rank() + step)

    train_student = student
    if world > 1:
        train_student = DistributedDataParallel(student, device_ids=[device.index] if device.type == "cuda" else None)

    total_steps = epochs * iters_per_epoch
    last = min(total_steps, args.max_steps) if args.max_steps else total_steps
    log.info("training %s + DINO head (%d prototypes): %d crops, %d steps per epoch, %d epochs, stopping at step %d, "
             "batch %d x %d processes, %s on %s", config["encoder"], head_cfg["out_dim"], views.n_crops,
             iters_per_epoch, epochs, last, batch_size, world, config["precision"] if use_amp else "fp32", device)

    def save_checkpoint() -> None:
        if distributed.is_main():
            state = {
                "student": student.state_dict(),
                "teacher": teacher.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "loss": dino_loss.state_dict(),
                "epoch": step // iters_per_epoch,
                "step": step,
                "iters_per_epoch": iters_per_epoch,
                "last_loss": last_loss,
                "config": config,
                "data": [str(p) for p in args.data],
            }
            atomic_write(checkpoint_path, lambda temp: torch.save(state, temp))  # never a half-written checkpoint
        distributed.barrier()

    window_loss = torch.zeros((), device=device)
    window_steps = 0
    started = time.time()
    student.train()
    teacher.eval()
    stopping = False
    while step < last:
        epoch = step // iters_per_epoch
        sampler.set_epoch(epoch, skip_batches=step % iters_per_epoch, batch_size=batch_size)
        for crops in loader:
            for i, group in enumerate(optimizer.param_groups):
                group["lr"] = float(lr_schedule[step])  # plain floats keep the checkpoint loadable with weights_only
                if i == 0:  # only the weights decay (param_groups puts them first)
                    group["weight_decay"] = float(wd_schedule[step])
            crops = [c.to(device, non_blocking=True) for c in crops]

            with torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16, enabled=use_amp):
                with torch.no_grad():
                    teacher_output = teacher(crops[:2])
                student_output = train_student(crops)
            loss = dino_loss(student_output, teacher_output, epoch)
            if not math.isfinite(loss.item()):
                raise RuntimeError(f"loss is {loss.item()} at step {step}; stopping (try a lower lr or bf16)")

            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)  # clip the true gradients
            if optim_cfg["clip_grad"]:
                torch.nn.utils.clip_grad_norm_(student.parameters(), optim_cfg["clip_grad"])
            cancel_last_layer_gradients(student, epoch, optim_cfg["freeze_last_layer_epochs"])
            scaler.step(optimizer)
            scaler.update()
            update_teacher(student, teacher, float(momentum_schedule[step]))
            step += 1

            window_loss += loss.detach()
            window_steps += 1
            if step % config["log_every"] == 0 or step == last:
                last_loss = float(distributed.all_reduce_mean(window_loss / window_steps))
                _log_step(out, step, epoch, last_loss, lr_schedule[step - 1], wd_schedule[step - 1],
                          momentum_schedule[step - 1], dino_loss.teacher_temperature(epoch), time.time() - started)
                window_loss.zero_()
                window_steps = 0
            # Every process must agree to stop at the same step (one may see the signal first).
            stopping = bool(distributed.all_reduce_mean(torch.tensor(float(stop.requested), device=device)) > 0)
            if step % config["checkpoint_every_steps"] == 0 or step % iters_per_epoch == 0 or step == last or stopping:
                save_checkpoint()
            if step >= last or stopping:
                break
        if stopping:
            log.info("stopped at step %d (%s); resume with --resume", step, stop.reason)
            break

    manifest = _export(out, teacher.encoder, config, args, dataset, step, iters_per_epoch, last_loss)
    distributed.barrier()
    return manifest


def _export(out: Path, encoder: torch.nn.Module, config: dict[str, Any], args: argparse.Namespace,
            dataset: UnlabeledImages, step: int, iters_per_epoch: int, last_loss: float) -> dict[str, Any]:
    """The teacher encoder as OUT/encoder.safetensors + OUT/encoder.json (main process only)."""
    manifest = {
        "kind": "cmrfoundation-encoder",
        "method": "DINO",
        "encoder_preset": config["encoder"],
        "encoder": encoder.config.to_dict(),
        "weights": "encoder.safetensors",
        "preprocess": config["preprocess"],
        "data_sources": [os.path.abspath(p) for p in args.data],
        "n_images": len(dataset),
        "epochs": config["epochs"],
        "epochs_done": round(step / iters_per_epoch, 3),
        "steps": step,
        "final_loss": last_loss if math.isfinite(last_loss) else None,
        "world_size": distributed.world_size(),
        "config": config,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if distributed.is_main():
        relative, sha256 = save_encoder_weights(out, encoder.state_dict(), name="encoder")
        manifest["weights"], manifest["sha256"] = relative, sha256
        (out / "encoder.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        log.info("exported the teacher encoder to %s (sha256 %s)", out / relative, sha256)
    return manifest


def _log_step(out: Path, step: int, epoch: int, loss: float, lr: float, wd: float, momentum: float,
              teacher_temp: float, elapsed: float) -> None:
    if not distributed.is_main():
        return
    record = {"step": step, "epoch": epoch, "loss": round(loss, 5), "lr": float(lr), "wd": float(wd),
              "momentum": float(momentum), "teacher_temp": teacher_temp, "time_s": round(elapsed, 1)}
    log.info(json.dumps(record))
    with open(out / "log.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def _setup_logging(out: Path) -> None:
    """INFO to stdout on the main process (other ranks stay quiet unless something is wrong)."""
    root = logging.getLogger()
    if not any(getattr(h, "_dino", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        handler._dino = True  # marks our handler, so that in-process calls do not add it twice
        root.addHandler(handler)
    root.setLevel(logging.INFO)


if __name__ == "__main__":
    main()
