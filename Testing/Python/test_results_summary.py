"""The results page (Training/results_summary.py) reads what the evaluation scripts write."""

import numpy as np

import results_summary
from CMRFoundationLib.inference import ImagePredictions, TaskPredictor
from CMRFoundationLib.tasks import get_task
from CMRFoundationLib.weights import DEFAULT_WEIGHTS_DIR
from cmrtrain.data.synthetic import synthetic_samples
from cmrtrain.evaluation import evaluate, write_results


class Oracle:
    """Returns the truth of the samples it is given (found by their pixels)."""

    def __init__(self, task, samples):
        self.task, self.samples = task, samples

    def predict_images(self, images, spacing):
        labels = [next(s.target for s in self.samples if np.array_equal(s.image, image)) for image in images]
        return ImagePredictions(self.task.name, labels=np.stack(labels))


def test_headline_and_pretraining_tables_show_recorded_numbers(sample_study, tmp_path):
    task = get_task("seg_sax_cine")
    samples = [s for s in synthetic_samples(task, sample_study) if len(np.unique(s.target)) == 4][:4]
    ours = evaluate(task, TaskPredictor.load(task, DEFAULT_WEIGHTS_DIR, "cpu"), samples)
    perfect = evaluate(task, Oracle(task, samples), samples)
    # Filed as if on ACDC: the page reads folders, it does not know where the samples came from.
    write_results(tmp_path / "comparison" / "acdc", task, {"CMRFoundation": ours, "ResNet50 baseline": perfect},
                  {"split": "test", "samples": len(samples)})
    write_results(tmp_path / "scratch" / "acdc", task, {"CMRFoundation (CPU)": perfect}, {"split": "test"})

    assert results_summary.main([str(tmp_path)]) == 0
    page = (tmp_path / "RESULTS.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in page.splitlines() if line.startswith("| ")}
    lv = f"{ours['dice']['lv_blood_pool']['mean']:.3f}"
    assert rows["CMRFoundation, CPU weights (shipped)"].split("|")[2].strip() == lv
    assert rows["ResNet50 baseline, same training (CPU)"].split("|")[2].strip() == "1.000"
    assert rows["myopari ACDC / EMIDEC model (ONNX)"].split("|")[2].strip() == "-"  # not evaluated
    assert rows["The method (published)"].split("|")[2].strip() == "0.933"
    pretraining = rows["all (ACDC + synthetic train split)"]
    assert "not run" in pretraining.split("|")[3] and "1.000 / 1.000 / 1.000" in pretraining.split("|")[4]
