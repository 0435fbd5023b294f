"""Finetuning one task: data, model, loop, validation, and the weights it leaves behind.

Runs on CPU at tiny size (tests, the carried default weights) and on one or many GPUs at
full size (torchrun; see Training/README.md). The model is the task registry's head on
the ViT encoder, initialised from a DINO export when one is given; ``mode`` chooses full
finetuning, a frozen encoder (linear probe / frozen decoder) or LoRA adapters.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from CMRFoundationLib.models import architecture_of, build_model, set_trainable
from CMRFoundationLib.models.heads import heatmap_peaks
from CMRFoundationLib.models.lora import merge_lora
from CMRFoundationLib.models.vit import resize_position_embedding
from CMRFoundationLib.preprocess import PreprocessConfig, preprocess
from CMRFoundationLib.tasks import CLASSIFICATION, LANDMARKS, SEGMENTATION, TaskSpec, get_task
from CMRFoundationLib.weights import save_task_weights

from . import distributed
from .augment import AppearanceConfig, AugmentConfig, random_appearance, random_intensity, random_rigid, random_spacing
from .checkpoint import StopRequest, check_resume_settings, float32_state, load_compact, save_compact
from .data import Sample, samples_for, summarize
from .losses import loss_for
from .metrics import dice_per_class

# The data each task learns from by default (sources whose data is absent are skipped).
DEFAULT_SOURCES = {
    "image_type": ["acdc", "emidec", "synthetic"],
    "cine_view": ["acdc", "synthetic"],
    "seg_sax_cine": ["acdc", "synthetic"],
    "seg_4ch_cine": ["synthetic"],
    "seg_lge": ["emidec", "synthetic"],
    "seg_mapping": ["synthetic"],
    "rv_insertion": ["acdc", "synthetic"],
    "lge_presence": ["emidec", "synthetic"],
    "disease": ["acdc", "synthetic"],
}


@dataclass
class FinetuneConfig:
    task: str
    out: str  # run folder: log, checkpoint, final weights
    encoder: str = "vit_small"  # a ViT or hybrid preset, or "resnet50" for the baseline
    encoder_weights: str | None = None  # pretraining export (encoder.safetensors) to start from
    decoder_features: list[int] | None = None  # UNETR decoder widths; None: the default
    mode: str = "full"  # full | frozen | lora
    lora_rank: int = 8
    sources: list[str] | None = None  # None: DEFAULT_SOURCES[task]
    shared_root: str | None = None  # ../shared/data by default
    synthetic_root: str | None = None
    label_folders: list[str] = field(default_factory=list)
    few_shot: int | None = None  # N labelled samples per class (cases for dense tasks)
    train_split: str = "train"  # "all" trains on every sample (e.g. a final model)
    val_split: str | None = "val"  # None: no validation, the last state is kept
    epochs: int = 50
    max_steps: int | None = None  # stop early (smoke runs, tests)
    batch_size: int = 16
    lr: float = 3e-4  # the head's; the encoder's is lr * encoder_lr_scale
    encoder_lr_scale: float = 0.1
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    spacing_mm: float = 1.0
    size: int = 224
    percentile: float = 98.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    appearance: AppearanceConfig = field(default_factory=AppearanceConfig.none)  # scanner/vendor changes
    balance_classes: bool = True  # classification: sample classes equally often
    device: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA
    workers: int = 2
    seed: int = 0
    weights_out: str | None = None  # also write <task>.safetensors + manifest here
    save_float16: bool = False  # halve the weights file (loading returns float32)
    checkpoint: str | None = None  # compact resumable checkpoint (e.g. Training/checkpoints/<run>.pt)
    checkpoint_every_steps: int = 100

    @classmethod
    def from_dict(cls, values: dict) -> "FinetuneConfig":
        values = dict(values)
        if isinstance(values.get("augment"), dict):
            values["augment"] = AugmentConfig(**values["augment"])
        if isinstance(values.get("appearance"), dict):
            values["appearance"] = AppearanceConfig(**values["appearance"])
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown finetuning settings: {', '.join(sorted(unknown))}")
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def preprocessing(self) -> PreprocessConfig:
        return PreprocessConfig(spacing_mm=self.spacing_mm, size=self.size, percentile=self.percentile)


class TaskDataset(Dataset):
    """Samples pre-processed to the model grid, augmented when training.

    Randomness comes from (seed, epoch, index), so runs repeat exactly and workers do not
    share a random stream.
    """

    def __init__(self, samples: list[Sample], task: TaskSpec, preprocessing: PreprocessConfig,
                 augment: AugmentConfig | None = None, seed: int = 0, appearance: AppearanceConfig | None = None) -> None:
        self.samples, self.task, self.preprocessing = samples, task, preprocessing
        self.augment = augment or AugmentConfig.none()
        self.appearance = appearance or AppearanceConfig.none()
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        spacing = random_spacing(sample.spacing, self.augment, rng)
        image, grid = preprocess(sample.image, spacing, self.preprocessing)
        image = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        labels = points = None
        if self.task.kind == SEGMENTATION:
            labels = torch.from_numpy(np.asarray(grid.labels_to_model(sample.target)).astype(np.int64))
        elif self.task.kind == LANDMARKS:
            points = torch.from_numpy(np.asarray(grid.native_to_model_points(sample.target), dtype=np.float32))
        image, labels, points = random_rigid(image, labels, points, self.augment, rng)
        image = random_intensity(image, self.augment, rng)
        image = random_appearance(image, labels, self.appearance, rng)
        if self.task.kind == SEGMENTATION:
            target = labels
        elif self.task.kind == LANDMARKS:
            target = _drop_outside(points, self.preprocessing.size)
        else:
            target = torch.tensor(int(sample.target))
        return {"image": image, "target": target}


def _drop_outside(points: torch.Tensor, size: int) -> torch.Tensor:
    """Points moved out of the field of view cannot be learnt: mark them absent."""
    outside = ((points < 0) | (points > size - 1)).any(dim=-1)
    points = points.clone()
    points[outside] = float("nan")
    return points


def few_shot_subset(samples: list[Sample], task: TaskSpec, n: int, seed: int = 0) -> list[Sample]:
    """The few-shot protocol: N labelled samples per class; for dense tasks, N cases."""
    rng = np.random.default_rng(seed)
    if task.kind == CLASSIFICATION:
        chosen = []
        for c in range(len(task.labels)):
            members = [s for s in samples if int(s.target) == c]
            picks = rng.permutation(len(members))[:n]
            chosen += [members[i] for i in sorted(picks)]
        return chosen
    cases = sorted({s.case for s in samples})
    keep = {cases[i] for i in rng.permutation(len(cases))[:n]}
    return [s for s in samples if s.case in keep]


def load_samples(config: FinetuneConfig, task: TaskSpec, split: str) -> list[Sample]:
    kwargs = {"synthetic_root": config.synthetic_root, "label_folders": tuple(config.label_folders)}
    if config.shared_root:
        kwargs["shared_root"] = Path(config.shared_root)
    return samples_for(task, config.sources or DEFAULT_SOURCES[task.name], split, **kwargs)


def load_encoder_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Initialise the encoder from a DINO export; shapes must match (clear error if not)."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    encoder_state = model.encoder.state_dict()
    # Pretraining may have used another image size: resize the position grid to ours.
    if "pos_embed" in state and state["pos_embed"].shape != encoder_state["pos_embed"].shape:
        side = int(math.sqrt(encoder_state["pos_embed"].shape[1] - 1))
        state["pos_embed"] = resize_position_embedding(state["pos_embed"], side, side)
    mismatched = [k for k, v in state.items() if k in encoder_state and encoder_state[k].shape != v.shape]
    if mismatched:
        raise ValueError(f"{path}: encoder weights do not fit the {model.encoder.config} encoder ({', '.join(mismatched[:3])} differ)")
    missing, unexpected = model.encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: not an encoder of this architecture (missing {missing[:3]}, unexpected {unexpected[:3]})")


class EpochOrder(Sampler):
    """The order of the training samples in each epoch, drawn from (seed, epoch) alone, so
    that a resumed run sees the same batches; ``set_epoch(epoch, skip)`` starts an epoch
    after its first ``skip`` samples. With ``weights`` the samples are drawn with
    replacement in proportion to them (class balancing); under DDP each process takes its
    share of the same order.
    """

    def __init__(self, n: int, seed: int, weights: np.ndarray | None = None) -> None:
        self.n, self.seed, self.weights = n, seed, weights
        self.epoch, self.skip = 0, 0
        self.rank, self.world = distributed.rank(), distributed.world_size()

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def _order(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch, 7])
        if self.weights is None:
            order = rng.permutation(self.n)
        else:
            order = rng.choice(self.n, size=self.n, replace=True, p=self.weights / self.weights.sum())
        share = len(order) // self.world
        return order[self.rank * share:(self.rank + 1) * share]

    def __iter__(self):
        return iter(self._order()[self.skip:].tolist())

    def __len__(self) -> int:
        return self.n // self.world - self.skip


def _sampler(dataset: TaskDataset, task: TaskSpec, config: FinetuneConfig) -> EpochOrder:
    weights = None
    if task.kind == CLASSIFICATION and config.balance_classes:
        classes = np.array([int(s.target) for s in dataset.samples])
        counts = np.bincount(classes, minlength=len(task.labels)).astype(float)
        weights = 1.0 / counts[classes]
    return EpochOrder(len(dataset), config.seed, weights)


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def train_step(model: torch.nn.Module, batch: dict, loss_fn, optimizer, device: torch.device,
               use_amp: bool = False) -> float:
    """One optimisation step on a batch; returns its loss."""
    image, target = batch["image"].to(device), batch["target"].to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
        output = model(image)
    loss = loss_fn(output.float(), target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 3.0)
    optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def validate(model: torch.nn.Module, loader: DataLoader, task: TaskSpec, loss_fn, device: torch.device,
             spacing_mm: float) -> dict:
    """Loss and the task's metric on the model grid (the evaluation script measures on native pixels)."""
    model.eval()
    losses, scores = [], []
    for batch in loader:
        image, target = batch["image"].to(device), batch["target"].to(device)
        output = model(image)
        losses.append(float(loss_fn(output, target)) * len(image))
        if task.kind == SEGMENTATION:
            predicted = output.argmax(1).cpu().numpy()
            for p, t in zip(predicted, target.cpu().numpy()):
                scores.append(np.nanmean(dice_per_class(p, t, task.n_outputs)) if (t > 0).any() else np.nan)
        elif task.kind == LANDMARKS:
            points, _ = heatmap_peaks(output)
            error = ((points.cpu() - target.cpu()) ** 2).sum(-1).sqrt() * spacing_mm
            scores += error.flatten().tolist()
        else:
            scores += (output.argmax(1) == target).float().cpu().tolist()
    n = len(loader.dataset)
    metric = float(np.nanmean(scores)) if np.isfinite(np.asarray(scores, float)).any() else float("nan")
    name = {SEGMENTATION: "mean_dice", LANDMARKS: "mean_error_mm", CLASSIFICATION: "accuracy"}[task.kind]
    return {"loss": sum(losses) / max(1, n), name: metric, "metric": name}


def _better(task: TaskSpec, new: float, best: float | None) -> bool:
    if not np.isfinite(new):
        return best is None
    if best is None or not np.isfinite(best):
        return True
    return new < best if task.kind == LANDMARKS else new > best


def finetune(config: FinetuneConfig, log=print, resume: bool = False, stop: StopRequest | None = None) -> dict:
    """Train ``config.task``; returns the summary also written to OUT/summary.json.

    With ``config.checkpoint`` the training state is saved there every
    ``checkpoint_every_steps`` steps and when ``stop`` asks (a signal, a time budget);
    ``resume=True`` continues from it at the same step, learning rate and batch order.
    A stopped run still writes its weights (the best validated state so far) and says
    ``"finished": false`` in its summary.
    """
    device = distributed.init_distributed(None if config.device == "auto" else config.device)
    task = get_task(config.task)
    stop = stop or StopRequest()
    torch.manual_seed(config.seed)
    out = Path(config.out)
    if distributed.is_main():
        out.mkdir(parents=True, exist_ok=True)
    checkpoint = _read_checkpoint(config, resume, log)

    train_samples = load_samples(config, task, config.train_split)
    if config.few_shot:
        train_samples = few_shot_subset(train_samples, task, config.few_shot, config.seed)
    val_samples = load_samples(config, task, config.val_split) if config.val_split else []
    if not train_samples:
        raise ValueError(f"task {task.name}: no {config.train_split!r} samples from sources "
                         f"{config.sources or DEFAULT_SOURCES[task.name]}")
    log(f"{task.name}: train {summarize(train_samples)}; val {summarize(val_samples)}")

    model = build_model(task, config.encoder, image_size=config.size, decoder_features=config.decoder_features)
    if config.encoder_weights and checkpoint is None:
        load_encoder_weights(model, config.encoder_weights)
    n_trainable = set_trainable(model, config.mode if model.encoder is not None else "full")
    model.to(device)
    log(f"model: {architecture_of(model)['encoder']} + {task.kind} head, mode {config.mode}, {n_trainable / 1e6:.2f}M trainable")

    train_set = TaskDataset(train_samples, task, config.preprocessing, config.augment, config.seed, config.appearance)
    val_set = TaskDataset(val_samples, task, config.preprocessing)
    sampler = _sampler(train_set, task, config)
    batches_per_epoch = max(1, len(sampler) // config.batch_size) if len(train_set) > config.batch_size else 1
    loader = DataLoader(train_set, batch_size=config.batch_size, sampler=sampler, num_workers=config.workers,
                        drop_last=len(train_set) > config.batch_size)
    val_loader = DataLoader(val_set, batch_size=config.batch_size, num_workers=config.workers)

    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in trainable if n.startswith("encoder.")], "lr": config.lr * config.encoder_lr_scale},
        {"params": [p for n, p in trainable if not n.startswith("encoder.")], "lr": config.lr},
    ]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=config.weight_decay)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    loss_fn = loss_for(task, config.spacing_mm)
    use_amp = config.amp and device.type == "cuda"

    total = config.epochs * batches_per_epoch
    if config.max_steps:
        total = min(total, config.max_steps)
    warmup = int(config.warmup_epochs * batches_per_epoch)
    history, best, best_state, step, seconds_before = [], None, None, 0, 0.0
    if checkpoint is not None:
        if checkpoint.get("n_train") != len(train_samples):
            raise SystemExit(f"{config.checkpoint}: the run trained on {checkpoint.get('n_train')} samples, "
                             f"these sources give {len(train_samples)} (data added or missing?); cannot resume exactly")
        model.load_state_dict(float32_state(checkpoint["model"]))
        optimizer.load_state_dict(checkpoint["optimizer"])
        step, history, best = int(checkpoint["step"]), list(checkpoint["history"]), checkpoint["best"]
        best_state = float32_state(checkpoint["best_state"]) if checkpoint["best_state"] else None
        seconds_before = float(checkpoint["seconds"])
        log(f"resumed from {config.checkpoint} at step {step} of {total}")
    train_model = model
    if distributed.world_size() > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    started = time.perf_counter()

    def elapsed() -> float:
        return seconds_before + time.perf_counter() - started

    def save_checkpoint() -> None:
        if config.checkpoint and distributed.is_main():
            save_compact(config.checkpoint, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "history": history,
                "best": best, "best_state": best_state or {}, "seconds": elapsed(), "n_train": len(train_samples),
                "config": json.loads(json.dumps(config.to_dict(), default=str)),
            })

    running: list[float] = []
    while step < total and not stop.requested:
        epoch, skip = divmod(step, batches_per_epoch)
        train_set.set_epoch(epoch)
        sampler.set_epoch(epoch, skip * config.batch_size)
        model.train()
        for batch in loader:
            factor = _lr_factor(step, total, warmup)
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * factor
            running.append(train_step(train_model, batch, loss_fn, optimizer, device, use_amp))
            step += 1
            if step % config.checkpoint_every_steps == 0 and step % batches_per_epoch and step < total:
                save_checkpoint()
            if step >= total or stop.requested:
                break
        if step % batches_per_epoch and step < total:
            break  # stopped inside an epoch: no validation of a partial epoch
        record = {"epoch": epoch, "step": step, "train_loss": float(np.mean(running)) if running else None,
                  "seconds": round(elapsed(), 1)}
        running = []
        if len(val_set):
            record["val"] = validate(model, val_loader, task, loss_fn, device, config.spacing_mm)
            score = record["val"][record["val"]["metric"]]
            if _better(task, score, best):
                best, best_state = score, copy.deepcopy(model.state_dict())
        history.append(record)
        log(json.dumps(record))
        save_checkpoint()
    finished = step >= total
    if not finished:
        save_checkpoint()
        log(f"stopped at step {step} of {total} ({stop.reason}); resume with the same command and --resume")

    if best_state is not None:
        model.load_state_dict(best_state)
    summary = {"task": task.name, "config": config.to_dict(), "history": history, "best_val": best,
               "n_train": len(train_samples), "n_val": len(val_samples), "steps": step, "total_steps": total,
               "finished": finished, "train_seconds": round(elapsed(), 1)}
    if distributed.is_main():
        (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
        for folder in {str(out / "weights"), config.weights_out} - {None}:
            save_finetuned(model.cpu(), task, config, folder, summary)
    distributed.cleanup()
    return summary


def _read_checkpoint(config: FinetuneConfig, resume: bool, log) -> dict | None:
    """The checkpoint to resume from, or None; refuses to overwrite one without ``resume``
    and to resume with settings that change the training."""
    if not config.checkpoint or not Path(config.checkpoint).exists():
        if resume:
            log(f"resume: no checkpoint at {config.checkpoint} yet, starting from the beginning")
        return None
    if not resume:
        raise SystemExit(f"{config.checkpoint} exists: pass --resume to continue that run, or choose another --checkpoint")
    checkpoint = load_compact(config.checkpoint)
    saved, current = checkpoint["config"], json.loads(json.dumps(config.to_dict(), default=str))
    run_control = {"out", "workers", "device", "weights_out", "checkpoint", "checkpoint_every_steps"}
    check_resume_settings(saved, current, run_control, config.checkpoint)
    return checkpoint


def save_finetuned(model: torch.nn.Module, task: TaskSpec, config: FinetuneConfig, folder: str | Path, summary: dict) -> Path:
    """Write the task's safetensors + manifest; LoRA adapters are merged so loading needs no LoRA code."""
    merged = merge_lora(copy.deepcopy(model))
    last = summary["history"][-1] if summary["history"] else {}
    return save_task_weights(
        folder,
        task.name,
        merged.state_dict(),
        architecture=architecture_of(merged),
        preprocessing=config.preprocessing.to_dict(),
        labels=list(task.labels),
        dtype=torch.float16 if config.save_float16 else None,
        training={
            "sources": config.sources or DEFAULT_SOURCES[task.name],
            "label_folders": config.label_folders,
            "encoder_weights": Path(config.encoder_weights).name if config.encoder_weights else None,
            "mode": config.mode,
            "few_shot": config.few_shot,
            "epochs": config.epochs,
            "steps": summary["steps"],
            "finished": summary.get("finished", True),
            "train_seconds": summary.get("train_seconds"),
            "n_train": summary["n_train"],
            "n_val": summary["n_val"],
            "split": "Training/splits (patient-level, fixed)",
        },
        evaluation={"validation": last.get("val"), "best_validation_metric": summary["best_val"]},
    )
