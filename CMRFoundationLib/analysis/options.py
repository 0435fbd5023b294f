"""The choices a user can make for a study analysis, with defaults that suit a clinical read."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass
class AnalysisOptions:
    """How ``analyze_study`` runs.

    ``series`` overrides the automatic series choice: role name (see select.ROLES, e.g.
    ``"lge_sax"``) -> series number, for when the classifier picks the wrong series.
    """

    weights_dir: str | os.PathLike | None = None  # None: $CMRFM_WEIGHTS, else Resources/Weights
    device: str = "auto"  # auto, cpu, cuda or cuda:N
    batch_size: int = 16
    lge_n_sd: float = 5.0  # enhanced myocardium: brighter than remote mean + n x SD
    series: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "weights_dir": None if self.weights_dir is None else os.fspath(self.weights_dir),
            "device": self.device,
            "batch_size": self.batch_size,
            "lge_n_sd": self.lge_n_sd,
            "series": dict(self.series),
        }
