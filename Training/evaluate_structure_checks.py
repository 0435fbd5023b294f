"""How often the short-axis structural checks (``measurements/quality.py``) fire on real
studies, and on which: the ACDC expert labels of all patients, and a weight set's
segmentation of the test patients (ED and ES volumes; Bernard et al., IEEE TMI 2018).

    python Training/evaluate_structure_checks.py --weights DIR [--weights DIR2 ...]

Prints, per set, the volumes flagged, whether each problem invalidates the volumes, and the
segmentation's myocardium Dice and LV volume error there, so that what the checks catch can
be compared with what is wrong. ACDC keeps no spacing: 1.5 mm pixels assumed.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from CMRFoundationLib.inference import TaskPredictor
from CMRFoundationLib.measurements.aha import guess_basal_end
from CMRFoundationLib.measurements.quality import short_axis_problems
from cmrtrain.data.acdc import acdc_patients
from cmrtrain.data.splits import load_split
from cmrtrain.metrics import dice_per_class

ACDC = "../shared/data/acdc"


def check(labels: np.ndarray, lv: int, myo: int, rv: int):
    try:
        base = guess_basal_end(labels, lv_blood=lv, lv_myocardium=myo, rv_blood=rv)
    except ValueError:
        base = None
    return short_axis_problems(labels, 1.5, lv_blood=lv, lv_myocardium=myo, rv_blood=rv, basal_end=base)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", action="append", default=[])
    parser.add_argument("--acdc-root", default=ACDC)
    args = parser.parse_args(argv)
    try:
        patients = sorted(acdc_patients(args.acdc_root))
    except ValueError as error:
        print(f"no ACDC data: {error}")
        return 0
    volumes = {(p, phase): np.load(f"{args.acdc_root}/{p}_{phase}.npz") for p in patients for phase in ("ED", "ES")}
    flagged = [key for key, v in volumes.items() if check(v["label"], 3, 2, 1)]  # ACDC: 1 RV, 2 myo, 3 LV
    print(f"expert labels: {len(flagged)} of {len(volumes)} volumes flagged {flagged}")
    test = load_split("acdc")["test"]
    for weights in args.weights:
        predictor = TaskPredictor.load("seg_sax_cine", weights, "cpu")
        lines, invalid = [], 0
        for patient in test:
            for phase in ("ED", "ES"):
                volume = volumes[(patient, phase)]
                predicted = predictor.predict_images(volume["image"].astype(np.float32), (1.5, 1.5)).labels
                truth = np.select([volume["label"] == 3, volume["label"] == 2, volume["label"] == 1], [1, 2, 3], 0)
                problems = check(predicted, 1, 2, 3)
                if not problems:
                    continue
                invalid += any(p.invalidates_volumes for p in problems)
                dice = dice_per_class(predicted, truth, 4)
                error = 100 * ((predicted == 1).sum() - (truth == 1).sum()) / (truth == 1).sum()
                lines.append(f"  {patient} {phase}: myocardium Dice {dice[1]:.2f}, LV volume {error:+.0f} %; "
                             + "; ".join(("[invalidates] " if p.invalidates_volumes else "") + p.text for p in problems))
        print(f"{weights}: {len(lines)} of {2 * len(test)} test volumes flagged, {invalid} invalidated")
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
