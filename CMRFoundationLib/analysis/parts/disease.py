"""Disease class (NOR, DCM, HCM, MINF, abnormal RV) from the phenotypes measured on the ED
and ES segmentation (``measurements.phenotypes``), pooled with the image model (basal slice
at ED, mid-systole and ES) as the classifier's file says; either alone when the other is
unavailable."""

from __future__ import annotations

import numpy as np

from ...measurements.phenotypes import cardiac_phenotypes
from ...stack import ImageStack
from ...task_inputs import cardiac_levels
from ..predictors import ModelUnavailable
from ..results import PartResult
from .context import Context, PartSkipped, PartSpec, indices
from .helpers import classification_json, flag_low_class_confidence


def run(ctx: Context, part: PartResult, stack: ImageStack) -> None:
    sax = ctx.need_sax()
    if sax.es_frame is None:
        raise PartSkipped("no end-systolic frame in the short-axis cine")
    lv, myo, rv = indices(sax.label_names, "lv_blood_pool", "lv_myocardium", "rv_blood_pool")
    levels = cardiac_levels(sax.labels, lv, myo, rv)
    levels.ed_frame, levels.es_frame = sax.ed_frame, sax.es_frame
    part.notes += levels.notes
    try:
        image_prediction = ctx.predict("disease", stack, levels)
    except PartSkipped as missing:
        image_prediction, image_missing = None, str(missing)
    try:
        classifier = ctx.predictors.phenotype_classifier()
    except ModelUnavailable as missing:
        if image_prediction is None:
            raise PartSkipped(f"{image_missing}; {missing}") from None
        part.notes.append(f"{missing}: the class is the image model's alone")
        part.results = {**classification_json(image_prediction, levels), "method": "image model"}
        flag_low_class_confidence(ctx, part, image_prediction.class_name, float(np.max(image_prediction.probabilities)))
        return
    column_row = stack.spacing[:2]
    phenotypes = cardiac_phenotypes(sax.labels[:, sax.ed_frame], sax.labels[:, sax.es_frame],
                                    (float(column_row[1]), float(column_row[0])), lv_blood=lv, lv_myocardium=myo,
                                    rv_blood=rv)
    part.notes += phenotypes.notes
    image_p = None if image_prediction is None else image_prediction.probabilities
    image_json = None if image_prediction is None else classification_json(image_prediction, levels)
    pooled = classifier.predict_proba(classifier.feature_rows([phenotypes.values]), image_p)[0]
    uses_image = image_p is not None and classifier.image_model_weight > 0
    chosen = classifier.classes[int(np.argmax(pooled))]
    part.results = {
        "class": chosen,
        "probabilities": {name: round(float(p), 4) for name, p in zip(classifier.classes, pooled)},
        "method": "phenotypes + image model" if uses_image else "phenotypes",
        "phenotypes": phenotypes.to_dict()["values"],
        "image_model": image_json,
        "levels": None if image_json is None else image_json["levels"],
    }
    flag_low_class_confidence(ctx, part, chosen, float(np.max(pooled)))


PART = PartSpec(name="disease", title="Disease class", role="cine_sax", run=run, progress_weight=0.2)
