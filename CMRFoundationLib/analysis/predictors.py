"""The task models of one analysis: each loaded once, on first use, and recorded for the results.

torch and the models are imported when the first model is loaded, not with this module:
the analysis parts and the analysis.json readers import it without needing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..weights import WeightsError, resolve_weights_dir

if TYPE_CHECKING:
    from ..inference import TaskPredictor
    from ..models.phenotype_classifier import PhenotypeClassifier

PHENOTYPE_FILE = "disease_phenotypes.json"  # models/phenotype_classifier.py FILE_NAME (checked there)


class ModelUnavailable(Exception):
    """A task's weights are missing or unusable; the message says why."""


class Predictors:
    """``loaded``: models already loaded (with the same weights, device and batch size), shared
    with other analyses; a batch worker keeps one such dict for all its studies."""

    def __init__(self, weights_dir=None, device: str = "auto", batch_size: int = 16, loaded: dict | None = None) -> None:
        self.weights_dir, self.device, self.batch_size = weights_dir, device, batch_size
        self._loaded: dict[str, TaskPredictor] = {} if loaded is None else loaded
        self._unavailable: dict[str, str] = {}
        self._used: set[str] = set()  # what this analysis used, for record(), whatever else is loaded

    def get(self, task: str) -> TaskPredictor:
        """The task's predictor; ModelUnavailable when its weights cannot be used."""
        self._used.add(task)
        if task in self._unavailable:
            raise ModelUnavailable(self._unavailable[task])
        if task not in self._loaded:
            from ..inference import TaskPredictor

            try:
                self._loaded[task] = TaskPredictor.load(task, self.weights_dir, self.device, self.batch_size)
            except (WeightsError, OSError) as error:
                self._unavailable[task] = f"no usable weights for the {task} model: {error}"
                raise ModelUnavailable(self._unavailable[task]) from None
        return self._loaded[task]

    def phenotype_classifier(self) -> PhenotypeClassifier:
        """The disease classifier on measured phenotypes; ModelUnavailable when absent or unusable."""
        from ..models.phenotype_classifier import PhenotypeClassifier

        key = PHENOTYPE_FILE
        self._used.add(key)
        if key in self._unavailable:
            raise ModelUnavailable(self._unavailable[key])
        if key not in self._loaded:
            try:
                self._loaded[key] = PhenotypeClassifier.load(resolve_weights_dir(self.weights_dir))
            except (WeightsError, ValueError) as error:
                self._unavailable[key] = f"no usable phenotype classifier: {error}"
                raise ModelUnavailable(self._unavailable[key]) from None
        return self._loaded[key]

    def record(self) -> dict:
        """The weights folder, and the files (with hashes) of every model used, for reproducibility."""
        try:
            folder, folder_error = str(resolve_weights_dir(self.weights_dir)), None
        except WeightsError as error:
            folder, folder_error = None, str(error)
        used = {key: self._loaded[key] for key in sorted(self._used) if key in self._loaded}
        return {
            "folder": folder,
            "folder_error": folder_error,
            "device": next((str(p.device) for key, p in used.items() if key != PHENOTYPE_FILE), None),
            "tasks": {task: predictor.manifest.get("files") for task, predictor in used.items() if task != PHENOTYPE_FILE},
            "phenotype_classifier": PHENOTYPE_FILE if PHENOTYPE_FILE in used else None,
            "unavailable": dict(sorted(self._unavailable.items())),
        }

