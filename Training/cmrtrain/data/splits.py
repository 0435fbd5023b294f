"""Fixed patient-level train/val/test splits.

ACDC and EMIDEC: stratified by disease group / LGE presence, 70/10/20, seed 0, written
once to ``Training/splits/<name>.json`` (``write_split``) and read from there ever after
(``load_split``), so every run and every model sees the same test patients.

Synthetic studies: a rule on the seed, so a cache of any size splits the same way.
Within every block of 10 seeds, 7 are train, 1 val, 2 test; which ones rotates from
block to block so that, with the pathology cycling as ``seed % 5``, every 50 seeds put
each pathology twice in test and once in val.

Label folders: a stable hash of "<folder name>/<case id>" into the same 70/10/20.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)
SPLIT_DIR = Path(__file__).resolve().parents[2] / "splits"


def make_split(
    ids: Sequence[str], groups: Sequence[str], fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0
) -> dict[str, list[str]]:
    """A stratified split: within each group, ids go to train/val/test by ``fractions``.

    Per group, val and test get round(n * fraction) ids (at least one each when the group
    has three or more); the rest is train. Lists are sorted; the result depends only on
    the ids, groups, fractions and seed.
    """
    if len(ids) != len(groups):
        raise ValueError(f"{len(ids)} ids but {len(groups)} groups")
    if len(set(ids)) != len(ids):
        raise ValueError("ids must be unique")
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers (train, val, test) summing to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    split: dict[str, list[str]] = {name: [] for name in SPLITS}
    for group in sorted(set(groups)):
        members = sorted(i for i, g in zip(ids, groups) if g == group)
        members = [members[k] for k in rng.permutation(len(members))]
        n = len(members)
        n_val, n_test = (round(n * f) for f in fractions[1:])
        if n >= 3:
            n_val, n_test = max(n_val, 1 if fractions[1] else 0), max(n_test, 1 if fractions[2] else 0)
        split["test"] += members[:n_test]
        split["val"] += members[n_test : n_test + n_val]
        split["train"] += members[n_test + n_val :]
    return {name: sorted(members) for name, members in split.items()}


def write_split(name: str, split: dict[str, list[str]], rule: str, folder: Path = SPLIT_DIR) -> Path:
    """Write ``folder/<name>.json`` with the split lists and a line saying how it was made."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"name": name, "rule": rule, **{k: split[k] for k in SPLITS}}, indent=1) + "\n")
    return path


def load_split(name: str, folder: Path = SPLIT_DIR) -> dict[str, list[str]]:
    """The fixed split ``name`` ("acdc", "emidec"): {"train": [...], "val": [...], "test": [...]}."""
    path = folder / f"{name}.json"
    try:
        data = json.loads(path.read_text())
        split = {k: list(data[k]) for k in SPLITS}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: cannot read split {name!r} ({exc})") from exc
    seen: dict[str, str] = {}
    for part, members in split.items():
        for member in members:
            if member in seen:
                raise ValueError(f"{path}: {member!r} is in both {seen[member]} and {part}")
            seen[member] = part
    return split


def synthetic_split(seed: int) -> str:
    """The split of the synthetic study ``seed`` (see the module doc)."""
    position = (seed % 10 - (seed // 10) % 5) % 10
    if position in (0, 6):
        return "test"
    if position == 3:
        return "val"
    return "train"


def hashed_split(key: str, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> str:
    """A stable split for ``key`` from its CRC-32 (label folder cases)."""
    u = (zlib.crc32(key.encode("utf-8")) % 10000) / 10000
    if u < fractions[0]:
        return "train"
    return "val" if u < fractions[0] + fractions[1] else "test"


def generate_fixed_splits(shared_root: Path, seed: int = 0) -> list[Path]:
    """(Re)generate Training/splits/acdc.json and emidec.json from the data's own lists."""
    from .acdc import acdc_patients
    from .emidec import emidec_cases

    patients = acdc_patients(shared_root / "acdc")
    cases = emidec_cases(shared_root / "emidec")
    acdc_ids = sorted(patients)
    emidec_ids = sorted(cases)
    rule = f"make_split(stratified by {{}}, fractions {list(DEFAULT_FRACTIONS)}, seed {seed})"
    return [
        write_split("acdc", make_split(acdc_ids, [patients[i] for i in acdc_ids], seed=seed), rule.format("disease group")),
        write_split("emidec", make_split(emidec_ids, [str(cases[i]) for i in emidec_ids], seed=seed), rule.format("lge_present")),
    ]
