"""Ventricular volumes, ejection fraction and mass from a short-axis cine label map.

Volumes are summed slice by slice (Simpson's rule as used in CMR reporting): every
labelled pixel stands for its in-plane area times the thickness of the slab its slice
represents. Label maps follow ImageStack's layout, ``[slices, frames, rows, cols]``.

Which slab a slice represents (``slice_thicknesses``):

* regular stacks: the slice spacing (the length of ``ijk_to_lps``'s k column along the
  slice normal), whatever the nominal slice thickness, so gaps between slices count;
* irregular ``slice_positions``: each slice reaches half-way to each neighbour, and an
  end slice reaches as far outwards as inwards, i.e. its thickness is the gap to its
  only neighbour. For a regular stack this gives the spacing again.

With the valve planes and apex from a long-axis cine (``long_axis.py``) the slabs at the
two ends are clipped to them (``base_mm`` / ``apex_mm``, depths along the slice normal).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..stack import numbered
from ..tasks import get_task

if TYPE_CHECKING:
    from .long_axis import LongAxisBounds

MYOCARDIAL_DENSITY_G_PER_ML = 1.05

Label = int | Sequence[int]  # one label value, or several that count as one structure


def task_label(task_name: str, label_name: str) -> int:
    """Index of a label in a task's label order (tasks.py); used for the defaults."""
    return get_task(task_name).labels.index(label_name)


SAX_LV_BLOOD = task_label("seg_sax_cine", "lv_blood_pool")
SAX_LV_MYOCARDIUM = task_label("seg_sax_cine", "lv_myocardium")
SAX_RV_BLOOD = task_label("seg_sax_cine", "rv_blood_pool")


def label_mask(labels: np.ndarray, label: Label) -> np.ndarray:
    """Boolean mask of one label value or of any of several."""
    return np.isin(labels, np.atleast_1d(np.asarray(label)))


def pixel_area_mm2(ijk_to_lps: np.ndarray) -> float:
    """In-plane pixel area (mm^2); the cross product also covers non-square, sheared grids."""
    m = np.asarray(ijk_to_lps, dtype=float)
    return float(np.linalg.norm(np.cross(m[:3, 0], m[:3, 1])))


def slice_normal_spacing_mm(ijk_to_lps: np.ndarray) -> float:
    """Distance between neighbouring slices along the slice normal (mm)."""
    m = np.asarray(ijk_to_lps, dtype=float)
    normal = np.cross(m[:3, 0], m[:3, 1])
    return float(abs(m[:3, 2] @ normal) / np.linalg.norm(normal))


def slice_thicknesses(n_slices: int, ijk_to_lps: np.ndarray, slice_positions: Sequence[float] | None = None) -> np.ndarray:
    """Thickness (mm) of the slab each slice stands for; see the module docstring for the rule."""
    if slice_positions is None:
        spacing = slice_normal_spacing_mm(ijk_to_lps)
        if n_slices > 1 and spacing <= 0:
            raise ValueError("ijk_to_lps has no extent between slices; pass slice_positions")
        return np.full(n_slices, spacing)
    positions = np.asarray(slice_positions, dtype=float)
    if positions.shape != (n_slices,):
        raise ValueError(f"slice_positions has {positions.size} values for {n_slices} slices")
    if n_slices == 1:
        return np.full(1, slice_normal_spacing_mm(ijk_to_lps))
    order = np.argsort(positions)
    gaps = np.diff(positions[order])
    if (gaps <= 0).any():
        raise ValueError("slice_positions has two slices at the same position")
    sorted_thickness = np.empty(n_slices)
    sorted_thickness[1:-1] = (gaps[:-1] + gaps[1:]) / 2
    sorted_thickness[0], sorted_thickness[-1] = gaps[0], gaps[-1]
    thickness = np.empty(n_slices)
    thickness[order] = sorted_thickness
    return thickness


def slice_depths_mm(n_slices: int, ijk_to_lps: np.ndarray, slice_positions: Sequence[float] | None = None) -> np.ndarray:
    """Position of every slice along the unit slice normal (row x column direction), mm from the LPS origin."""
    if slice_positions is not None:
        return np.asarray(slice_positions, dtype=float)
    m = np.asarray(ijk_to_lps, dtype=float)
    normal = np.cross(m[:3, 0], m[:3, 1])
    normal /= np.linalg.norm(normal)
    return float(m[:3, 3] @ normal) + np.arange(n_slices) * float(m[:3, 2] @ normal)


def label_volumes_ml(
    labels: np.ndarray,
    label: Label,
    ijk_to_lps: np.ndarray,
    slice_positions: Sequence[float] | None = None,
    *,
    base_mm: Sequence[float | None] | None = None,
    apex_mm: Sequence[float | None] | None = None,
) -> np.ndarray:
    """Volume (mL) of a label in every frame of a ``[slices, frames, rows, cols]`` label map.

    ``base_mm`` / ``apex_mm``: per frame, the depth (along the slice normal, as
    ``slice_depths_mm``) of the valve plane and of the apex; None entries keep Simpson's ends.
    """
    labels = np.asarray(labels)
    if labels.ndim != 4:
        raise ValueError(f"labels must be [slices, frames, rows, cols], got shape {labels.shape}")
    pixels_per_slice = label_mask(labels, label).sum(axis=(2, 3))  # [slices, frames]
    n_slices, n_frames = pixels_per_slice.shape
    slab = slice_thicknesses(n_slices, ijk_to_lps, slice_positions)
    pixel_ml = pixel_area_mm2(ijk_to_lps) / 1000
    if base_mm is None and apex_mm is None:
        return (slab * pixel_ml) @ pixels_per_slice
    depth = slice_depths_mm(n_slices, ijk_to_lps, slice_positions)
    volumes = np.empty(n_frames)
    for f in range(n_frames):
        clipped = clipped_slab_mm(pixels_per_slice[:, f] > 0, depth, slab, _at(base_mm, f), _at(apex_mm, f))
        volumes[f] = (clipped * pixel_ml) @ pixels_per_slice[:, f]
    return volumes


def clipped_slab_mm(
    present: np.ndarray,
    slice_depth_mm: np.ndarray,
    slab_mm: np.ndarray,
    base_mm: float | None,
    apex_mm: float | None,
) -> np.ndarray:
    """Thickness each short-axis slice stands for once the slabs end at the valve plane and the apex.

    Each slab is clipped where the plane cuts it, extended when the plane lies beyond the
    outermost slice that shows the structure (the stack did not reach it), and zero for
    slices beyond the plane (atrium, not ventricle). Towards the apex an extension counts
    half, as a ventricle tapers to its apex.
    ``present``: which slices show the structure; ``slab_mm``: each slice's Simpson slab.
    A bound that is None (or NaN) leaves that end as Simpson's rule has it.
    """
    depth = np.asarray(slice_depth_mm, dtype=float)
    slab = np.asarray(slab_mm, dtype=float)
    base = _finite(base_mm)
    apex = _finite(apex_mm)
    if base is None and apex is None:
        return slab.copy()
    # Work with depth increasing towards the base.
    if base is not None and apex is not None:
        sign = 1.0 if base > apex else -1.0
    else:
        sign = _sign_from_slices(present, depth, base if base is not None else apex, towards_base=base is not None)
    d = depth * sign
    low, high = d - slab / 2, d + slab / 2
    top = base * sign if base is not None else None
    bottom = apex * sign if apex is not None else None
    shown = np.flatnonzero(present)
    if shown.size:
        outer = shown[np.argmax(d[shown])]
        inner = shown[np.argmin(d[shown])]
        if top is not None and top > high[outer]:
            high[outer] = top  # the stack stops short of the valve plane
        if bottom is not None and bottom < low[inner]:
            low[inner] -= (low[inner] - bottom) / 2  # tapering towards the apex
    if top is not None:
        high = np.minimum(high, top)
    if bottom is not None:
        low = np.maximum(low, bottom)
    return np.clip(high - low, 0, None)


def _finite(value) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _sign_from_slices(present: np.ndarray, depth: np.ndarray, bound: float, towards_base: bool) -> float:
    """With one bound only: +1 when depth grows towards the base, judged by where the structure lies."""
    shown = depth[np.asarray(present, dtype=bool)]
    if shown.size == 0:
        return 1.0
    beyond = bound > float(np.mean(shown))
    return 1.0 if beyond == towards_base else -1.0


def _at(values: Sequence[float | None] | None, frame: int) -> float | None:
    return None if values is None else values[frame]


def mosteller_bsa_m2(height_cm: float, weight_kg: float) -> float:
    """Body surface area by Mosteller: sqrt(height_cm x weight_kg / 3600)."""
    if not (height_cm > 0 and weight_kg > 0):
        raise ValueError(f"height ({height_cm} cm) and weight ({weight_kg} kg) must be positive")
    return float(np.sqrt(height_cm * weight_kg / 3600))


@dataclass
class VentricleVolumes:
    """End-diastolic and end-systolic volumes of one ventricle; indexed values are per m^2 BSA."""

    edv_ml: float | None
    esv_ml: float | None
    sv_ml: float | None
    ef_percent: float | None
    edv_index_ml_m2: float | None = None
    esv_index_ml_m2: float | None = None
    sv_index_ml_m2: float | None = None

    def to_dict(self) -> dict:
        return {key: _json_number(value) for key, value in asdict(self).items()}


@dataclass
class VentricularFunction:
    """LV and RV function of a cine; the volume curves are kept for plots and checks.

    Curve entries are None for frames whose LV (or RV) label is empty.
    """

    ed_frame: int
    es_frame: int | None
    lv: VentricleVolumes
    rv: VentricleVolumes | None
    lv_mass_g: float | None
    lv_mass_index_g_m2: float | None
    bsa_m2: float | None
    lv_volume_curve_ml: list[float | None]
    rv_volume_curve_ml: list[float | None] | None
    lv_myocardium_curve_ml: list[float | None] | None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        def curve(values):
            return None if values is None else [_json_number(v) for v in values]

        return {
            "ed_frame": self.ed_frame,
            "es_frame": self.es_frame,
            "lv": self.lv.to_dict(),
            "rv": None if self.rv is None else self.rv.to_dict(),
            "lv_mass_g": _json_number(self.lv_mass_g),
            "lv_mass_index_g_m2": _json_number(self.lv_mass_index_g_m2),
            "bsa_m2": _json_number(self.bsa_m2),
            "lv_volume_curve_ml": curve(self.lv_volume_curve_ml),
            "rv_volume_curve_ml": curve(self.rv_volume_curve_ml),
            "lv_myocardium_curve_ml": curve(self.lv_myocardium_curve_ml),
            "warnings": list(self.warnings),
        }


def ventricular_function(
    labels: np.ndarray,
    ijk_to_lps: np.ndarray,
    *,
    slice_positions: Sequence[float] | None = None,
    lv_blood: Label = SAX_LV_BLOOD,
    lv_myocardium: Label = SAX_LV_MYOCARDIUM,
    rv_blood: Label | None = SAX_RV_BLOOD,
    height_cm: float | None = None,
    weight_kg: float | None = None,
    long_axis: "LongAxisBounds | None" = None,
) -> VentricularFunction:
    """LV/RV function and LV mass from a short-axis cine label map ``[slices, frames, rows, cols]``.

    Label defaults are seg_sax_cine's; pass ``rv_blood=None`` when there is no RV label.
    ``long_axis``: valve planes and apices per short-axis frame (long_axis.py); the LV
    blood pool ends at the mitral plane and the endocardial apex, the myocardium at the
    mitral plane and the epicardial apex, the RV at the tricuspid plane. Without it,
    Simpson's rule counts every slab whole.
    """
    b = long_axis
    lv_ends = (None, None) if b is None else (b.mitral_mm, b.lv_apex_mm)
    myo_ends = (None, None) if b is None else (b.mitral_mm, b.epicardial_apex_mm)
    rv_ends = (None, None) if b is None else (b.tricuspid_mm, None)

    def volumes(label, ends):
        return label_volumes_ml(labels, label, ijk_to_lps, slice_positions, base_mm=ends[0], apex_mm=ends[1])

    lv_curve = volumes(lv_blood, lv_ends)
    rv_curve = None if rv_blood is None else volumes(rv_blood, rv_ends)
    myo_curve = volumes(lv_myocardium, myo_ends)
    return function_from_volume_curves(lv_curve, rv_curve, myo_curve, height_cm=height_cm, weight_kg=weight_kg)


def function_from_volume_curves(
    lv_curve_ml: Sequence[float],
    rv_curve_ml: Sequence[float] | None = None,
    lv_myocardium_curve_ml: Sequence[float] | None = None,
    *,
    height_cm: float | None = None,
    weight_kg: float | None = None,
) -> VentricularFunction:
    """Function from per-frame volumes; a volume of 0 (or NaN) marks a frame as missing.

    ED is the frame of largest LV volume and ES that of the smallest, the earliest frame
    on a tie. The RV is read at the LV's ED and ES frames (one pair of frames for the
    whole report). Mass = ED myocardial volume x 1.05 g/mL.
    """
    warnings: list[str] = []
    lv = _as_curve(lv_curve_ml)
    if lv.ndim != 1 or lv.size == 0:
        raise ValueError("the LV volume curve must have one value per frame")
    present = np.isfinite(lv)
    if not present.any():
        raise ValueError("the LV blood pool is empty in every frame; cannot measure ventricular function")
    if not present.all():
        warnings.append(f"LV blood pool empty in frame(s) {numbered(np.flatnonzero(~present))}; they are left out of ED/ES")
    ed = int(np.nanargmax(lv))
    es: int | None = int(np.nanargmin(lv))
    if present.sum() < 2:
        warnings.append("only one frame has an LV: no end-systole, so no ESV, SV or EF")
        es = None

    bsa = None
    if height_cm is not None and weight_kg is not None:
        bsa = mosteller_bsa_m2(height_cm, weight_kg)
    elif height_cm is not None or weight_kg is not None:
        warnings.append("height and weight are both needed for BSA; values are not indexed")

    rv = rv_volumes = None
    if rv_curve_ml is not None:
        rv = _as_curve(rv_curve_ml)
        if rv.shape != lv.shape:
            raise ValueError(f"the RV curve has {rv.size} frames, the LV curve {lv.size}")
        rv_volumes = _ventricle(rv, ed, es, bsa, "RV", warnings)

    mass = mass_index = None
    myo = None
    if lv_myocardium_curve_ml is not None:
        myo = _as_curve(lv_myocardium_curve_ml)
        if myo.shape != lv.shape:
            raise ValueError(f"the myocardium curve has {myo.size} frames, the LV curve {lv.size}")
        if np.isfinite(myo[ed]):
            mass = float(myo[ed]) * MYOCARDIAL_DENSITY_G_PER_ML
            mass_index = None if bsa is None else mass / bsa
        else:
            warnings.append(f"LV myocardium empty at end-diastole (frame {numbered(ed)}); no LV mass")

    return VentricularFunction(
        ed_frame=ed,
        es_frame=es,
        lv=_ventricle(lv, ed, es, bsa, "LV", warnings),
        rv=rv_volumes,
        lv_mass_g=mass,
        lv_mass_index_g_m2=mass_index,
        bsa_m2=bsa,
        lv_volume_curve_ml=_curve_list(lv),
        rv_volume_curve_ml=None if rv is None else _curve_list(rv),
        lv_myocardium_curve_ml=None if myo is None else _curve_list(myo),
        warnings=warnings,
    )


def _as_curve(values: Sequence[float]) -> np.ndarray:
    """Float curve with empty frames (0 or negative) as NaN."""
    curve = np.asarray(values, dtype=float).copy()
    curve[~(curve > 0)] = np.nan
    return curve


def _ventricle(curve: np.ndarray, ed: int, es: int | None, bsa: float | None, name: str, warnings: list[str]) -> VentricleVolumes:
    edv = float(curve[ed]) if np.isfinite(curve[ed]) else None
    esv = float(curve[es]) if es is not None and np.isfinite(curve[es]) else None
    if edv is None:
        warnings.append(f"{name} blood pool empty at end-diastole (frame {numbered(ed)})")
    if es is not None and esv is None:
        warnings.append(f"{name} blood pool empty at end-systole (frame {numbered(es)})")
    sv = edv - esv if edv is not None and esv is not None else None
    ef = 100 * sv / edv if sv is not None else None

    def indexed(value):
        return None if value is None or bsa is None else value / bsa

    return VentricleVolumes(edv, esv, sv, ef, indexed(edv), indexed(esv), indexed(sv))


def _curve_list(curve: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in curve]


def _json_number(value):
    """Plain float (or None) for JSON: no numpy scalars, no NaN."""
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None
