"""LGE present or absent, from the basal, mid and apical slices of the LGE stack (levels
from the LGE extent part's segmentation); a disagreement with the n-SD extent is flagged."""

from __future__ import annotations

import numpy as np

from ...stack import ImageStack
from ...task_inputs import cardiac_levels
from ...tasks import get_task
from .. import results as r
from ..results import PartResult
from .context import Context, PartSkipped, PartSpec, indices
from .helpers import classification_json, flag_low_class_confidence


def run(ctx: Context, part: PartResult, stack: ImageStack) -> None:
    if ctx.shared.lge_labels is None:
        raise PartSkipped("needs the LGE segmentation of the LGE extent part, which did not run")
    levels = cardiac_levels(ctx.shared.lge_labels, *indices(get_task("seg_lge").labels, "lv_blood_pool", "lv_myocardium"))
    prediction = ctx.predict("lge_presence", stack, levels)
    part.results = classification_json(prediction, levels)
    part.notes += levels.notes
    flag_low_class_confidence(ctx, part, prediction.class_name, float(np.max(prediction.probabilities)))
    by_extent = ctx.shared.lge_present_by_extent
    if by_extent is not None and by_extent != (prediction.class_name == "present"):
        ctx.flag("info", r.RESULT_WARNING, f"the LGE presence model says {prediction.class_name}, the "
                 f"{ctx.lge_n_sd:g}-SD extent says {'present' if by_extent else 'absent'}", part.series, part.name)


PART = PartSpec(name="lge_presence", title="LGE presence", role="lge_sax", run=run, progress_weight=0.2)
