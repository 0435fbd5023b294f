"""The RV/LV end-diastolic volume ratio, from the volumes the function part reported: above
about 1.2 to 1.3 it points to a dilated RV (shunts, pulmonary hypertension, ARVC,
repaired tetralogy), below about 0.8 to a dilated LV. No cut-off is applied here: none
has been validated for this software."""

from __future__ import annotations

from ...measurements import plausibility as plausible
from ...stack import ImageStack
from ..results import PartResult
from .context import Context, MeasurementSpec, PartSkipped, PartSpec


def run(ctx: Context, part: PartResult, stack: ImageStack) -> None:
    lv_edv, rv_edv = ctx.value("lv_edv"), ctx.value("rv_edv")
    if not lv_edv or rv_edv is None:
        raise PartSkipped("needs the LV and RV end-diastolic volumes of the ventricular function part")
    part.results = {"lv_edv_ml": lv_edv, "rv_edv_ml": rv_edv}
    part.measure("rv_lv_edv_ratio", rv_edv / lv_edv)


PART = PartSpec(
    name="volume_ratio",
    title="RV/LV volume ratio",
    role="cine_sax",
    run=run,
    progress_weight=0.05,
    measurements=(MeasurementSpec("rv_lv_edv_ratio", "{ratio}", "RV/LV end-diastolic volume ratio", 2,
                                  plausible=plausible.RV_LV_EDV_RATIO),),
)
