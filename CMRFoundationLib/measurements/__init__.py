"""Clinical measurements of a CMR report from label maps (pure numpy).

Every function takes numpy arrays laid out as in ``ImageStack`` (label maps
``[slices, frames, rows, cols]`` or one frame of them) plus the stack's ``ijk_to_lps``,
and returns a dataclass whose ``to_dict()`` is ready for JSON. Label indices default to
the task label orders of ``tasks.py`` and can always be passed explicitly (one value, or
several that count as one structure).
"""

from .aha import (
    AHA_SEGMENT_NAMES,
    AhaSegmentation,
    PlaneGeometry,
    SliceSectors,
    WallThickness,
    aha_segments,
    guess_basal_end,
    segmental_wall_thickness,
    slice_levels,
)
from .atria import AtriaCine, AtriumCine, AtriumMeasures, area_length_volume_ml, atria_over_cine, atrium_measures
from .lge import LgeExtent, drop_small_components, lge_extent, partial_volume_slices
from .long_axis import (
    LONG_AXIS_MIN_DEG,
    LongAxisBounds,
    cycle_fractions,
    long_axis_bounds,
    matching_frames,
    not_a_long_axis_plane,
    valve_plane_problem,
)
from .mapping import MapValues, RegionValues, map_values
from .masks import erode_in_plane
from .volumes import (
    MYOCARDIAL_DENSITY_G_PER_ML,
    VentricleVolumes,
    VentricularFunction,
    function_from_volume_curves,
    label_volumes_ml,
    mosteller_bsa_m2,
    slice_thicknesses,
    ventricular_function,
)

__all__ = [
    "AHA_SEGMENT_NAMES",
    "LONG_AXIS_MIN_DEG",
    "MYOCARDIAL_DENSITY_G_PER_ML",
    "AhaSegmentation",
    "AtriaCine",
    "AtriumCine",
    "AtriumMeasures",
    "LgeExtent",
    "LongAxisBounds",
    "MapValues",
    "PlaneGeometry",
    "RegionValues",
    "SliceSectors",
    "VentricleVolumes",
    "VentricularFunction",
    "WallThickness",
    "aha_segments",
    "area_length_volume_ml",
    "atria_over_cine",
    "atrium_measures",
    "cycle_fractions",
    "drop_small_components",
    "erode_in_plane",
    "function_from_volume_curves",
    "guess_basal_end",
    "label_volumes_ml",
    "lge_extent",
    "not_a_long_axis_plane",
    "partial_volume_slices",
    "valve_plane_problem",
    "long_axis_bounds",
    "map_values",
    "matching_frames",
    "mosteller_bsa_m2",
    "segmental_wall_thickness",
    "slice_levels",
    "slice_thicknesses",
    "ventricular_function",
]
