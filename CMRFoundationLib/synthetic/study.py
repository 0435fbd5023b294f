"""Render a complete synthetic CMR study (DICOM) with exact ground truth beside it.

Output layout (documented in README.md, "Synthetic studies")::

    OUT/DICOM/S003_cine_2ch/...            one folder per series, DICOM files
    OUT/ground_truth/study.json            everything known about the patient and series
    OUT/ground_truth/labels/S006.npz       label map of series 6 (one stack)
    OUT/ground_truth/labels/S001-2.npz     label map of the 2nd stack of a multi-stack series

Each ``.npz`` holds ``labels`` (uint8, [slices, frames, rows, cols], values as in
``phantom.LABEL_NAMES``, sampled at voxel centres) and ``ijk_to_lps`` (4x4), the same
geometry as the DICOM stack it annotates.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from ..dicom.write import write_mr_series
from ..stack import SeriesInfo, geometry_matrix
from .appearance import (
    SEQUENCES,
    Bolus,
    CineLook,
    CoilBias,
    add_map_noise,
    add_rician_noise,
    bolus_table,
    flow_velocity_cm_s,
    phase_image,
)
from .phantom import LABEL_NAMES, HeartPhantom, PhantomParameters, Tissue, labels_from_tissue, sample_parameters

TRUTH_FORMAT = "cmrfm-synthetic-truth"
TRUTH_VERSION = 1


@dataclass
class StackPlan:
    ijk_to_lps: np.ndarray
    rows: int
    cols: int
    slices: int


@dataclass
class SeriesPlan:
    number: int
    name: str
    description: str
    image_type: str  # cine, lge, t1, t2, other: the image-type classifier's classes
    view: str  # sax, 2ch, 3ch, 4ch, aorta, other: the view classifier's classes
    sequence: str  # key of appearance.SEQUENCES
    stacks: list[StackPlan]
    thickness: float
    phases: list[float]
    header: dict = field(default_factory=dict)
    enhanced: bool = False
    distractor: str | None = None  # what a series that no part analyses is (e.g. "first-pass perfusion")
    dynamic_times: list[float] | None = None  # ms: a dynamic series, one frame per time, all at ``phases[0]``
    velocity_encoding: float | None = None  # cm/s: the phase (velocity) images of a flow acquisition


def _slab(centre, row_dir, col_dir, fov_mm, pixel_mm, slices=1, spacing=8.0) -> StackPlan:
    """A stack of parallel slices centred on ``centre`` (LPS)."""
    row_dir = np.asarray(row_dir, float) / np.linalg.norm(row_dir)
    col_dir = np.asarray(col_dir, float) / np.linalg.norm(col_dir)
    normal = np.cross(row_dir, col_dir)
    cols = 2 * int(round(fov_mm[0] / pixel_mm / 2))
    rows = 2 * int(round(fov_mm[1] / pixel_mm / 2))
    origin = np.asarray(centre, float) - row_dir * pixel_mm * (cols - 1) / 2 - col_dir * pixel_mm * (rows - 1) / 2 - normal * spacing * (slices - 1) / 2
    return StackPlan(geometry_matrix(origin, row_dir, col_dir, np.array([pixel_mm, pixel_mm, spacing])), rows, cols, slices)


# A scanner shows an oblique plane the way of its nearest standard orientation (by the
# largest component of the normal): the LPS directions to the image's right and down.
_DEFAULT_DISPLAY = {
    0: (np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])),  # sagittal: posterior right, feet down
    1: (np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, -1.0])),  # coronal: patient's left right, feet down
    2: (np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])),  # transverse: left right, posterior down
}


def _long_axis_slab(centre, row_dir, col_dir, heart_mm: float, pixel_mm: float, rng: np.random.Generator) -> StackPlan:
    """A long-axis cine plane as an operator plans it, around ``centre`` in the plane of ``row_dir, col_dir``.

    The field of view is about twice the heart's length (the heart fills a large part of
    it, as in real long-axis cines), often rectangular (cut to the chest), a little off
    centre. ``row_dir, col_dir`` show the apex at the top; the display keeps that (give or
    take 20 degrees) or takes the scanner's default for the plane's nearest standard
    orientation, so the apex points up, sideways or down, as on real scanners.
    """
    row_dir = np.asarray(row_dir, float) / np.linalg.norm(row_dir)
    col_dir = np.asarray(col_dir, float) / np.linalg.norm(col_dir)
    if rng.random() >= 0.5:
        normal = np.cross(row_dir, col_dir)
        right, down = _DEFAULT_DISPLAY[int(np.argmax(np.abs(normal)))]
        row_dir = right - (right @ normal) * normal
        row_dir /= np.linalg.norm(row_dir)
        col_dir = np.cross(normal, row_dir)
        col_dir *= np.sign(col_dir @ down) or 1.0  # the scanner flips the normal rather than show feet up
    angle = np.radians(rng.uniform(-20, 20))
    row_dir, col_dir = np.cos(angle) * row_dir + np.sin(angle) * col_dir, -np.sin(angle) * row_dir + np.cos(angle) * col_dir
    fov = float(np.clip(heart_mm * rng.uniform(1.8, 2.3), 240, 380))
    fov_rows = fov * rng.uniform(0.75, 1.0)
    shift = rng.normal(0, 8, 2)
    return _slab(centre + shift[0] * row_dir + shift[1] * col_dir, row_dir, col_dir, (fov, fov_rows), pixel_mm)


def plan_series(phantom: HeartPhantom, rng: np.random.Generator, frames: int, distractors: bool = False) -> list[SeriesPlan]:
    """The protocol of a CMR exam, in acquisition order, in this patient's geometry; with
    ``distractors``, also the series of a real exam that no part analyses (_distractor_plans)."""
    p = phantom.params
    X, Y, Z = phantom.axes
    O = phantom.origin
    c = phantom.lv_c_ed
    u = rng.uniform
    heart_centre = O - 0.35 * c * Z
    cine_phases = [k / frames for k in range(frames)]
    diastole = [0.75]  # LGE, maps and static series are triggered in mid-diastole
    fov = float(np.clip(1.9 * p.body_half_width_mm, 300, 380))
    cine_pixel = u(1.3, 1.8)
    cine = {"sequence_name": "*tfi2d1_25", "scanning_sequence": ("GR",), "sequence_variant": ("SK", "SS"),
            "echo_time": 1.2, "repetition_time": 2.8, "flip_angle": 55.0, "image_type": ("ORIGINAL", "PRIMARY", "M", "NORM", "DIS2D")}

    # Short axis: from below the apex to above the base, normal along the long axis.
    sax_spacing = float(rng.choice([8.0, 10.0]))
    z_lo, z_hi = -c - p.apex_wall_mm - 4, 8.0
    n_sax = int(np.ceil((z_hi - z_lo) / sax_spacing)) + 1
    sax_centre = O + Z * (z_lo + z_hi) / 2 + X * 15
    sax = lambda pixel, n=n_sax, spacing=sax_spacing, centre=sax_centre: _slab(centre, -X, -Y, (fov, 0.8 * fov), pixel, n, spacing)  # noqa: E731

    # Long-axis planes contain Z; their field of view and display vary as between scanners
    # (_long_axis_slab), drawn from their own stream so that the other series stay as they are.
    lax_rng = np.random.default_rng([p.seed, 4])
    atria_top = 1.8 * max(phantom.la_radii[2], phantom.ra_radii[2])
    heart_mm = c + p.apex_wall_mm + atria_top  # apex to the roof of the atria
    lax_centre = O + 0.5 * (atria_top - c - p.apex_wall_mm) * Z
    aortic = phantom.axes[:2].T @ (phantom.aortic_valve_xy / np.linalg.norm(phantom.aortic_valve_xy))
    four_ch_centre = lax_centre + Y * phantom.la_centre_xy[1] * 0.5
    curve = phantom.aorta_curve
    a, b, d = curve[0] + 0.5 * (curve[1] - curve[0]), curve[len(curve) // 2 - 2], curve[-5]
    aorta_normal = np.cross(b - a, d - a)
    aorta_normal /= np.linalg.norm(aorta_normal)
    down = np.array([0, 0, -1.0]) - aorta_normal * -aorta_normal[2]
    down /= np.linalg.norm(down)
    aorta_row = np.cross(down, aorta_normal)

    # Mapping: basal, mid and apical short-axis slices.
    levels = np.array([0.78, 0.5, 0.22])  # fraction of the cavity from apex to base
    z_levels = -c * (1 - levels)
    map_spacing = float(z_levels[0] - z_levels[1])
    map_centre = O + Z * z_levels[1] + X * 15
    map_pixel = u(1.4, 2.0)

    lge_header = {"sequence_name": "*tfl2d1", "scanning_sequence": ("GR", "IR"), "sequence_variant": ("SK", "SP", "MP"),
                  "echo_time": 3.3, "repetition_time": 700.0, "inversion_time": float(u(250, 330)), "flip_angle": 25.0,
                  "image_type": ("ORIGINAL", "PRIMARY", "M", "NORM")}
    map_header = {"sequence_name": "*tfi2d1", "scanning_sequence": ("GR",), "sequence_variant": ("SK", "SS")}

    plans = [
        SeriesPlan(1, "localizer", "localizer_3plane", "other", "other", "bssfp",
                   [_slab(heart_centre + off, r, col, (410, 410), 1.6, 3, 15.0) for r, col, off in (
                       ((1, 0, 0), (0, 1, 0), 0), ((1, 0, 0), (0, 0, -1), 0), ((0, 1, 0), (0, 0, -1), 0))],
                   8.0, diastole, {**cine, "sequence_name": "*tfi2d1"}),
        SeriesPlan(2, "haste_tra", "haste_tra_db", "other", "other", "haste",
                   [_slab(heart_centre, (1, 0, 0), (0, 1, 0), (fov, 0.8 * fov), 1.4, 10, 10.0)], 6.0, diastole,
                   {"sequence_name": "*h2d1", "scanning_sequence": ("SE",), "sequence_variant": ("SK", "SP"),
                    "echo_time": 40.0, "repetition_time": 800.0, "flip_angle": 160.0, "image_type": ("ORIGINAL", "PRIMARY", "M", "NORM")}),
        SeriesPlan(3, "cine_2ch", "cine_retro_2ch", "cine", "2ch", "bssfp",
                   [_long_axis_slab(lax_centre, Y, Z, heart_mm, cine_pixel, lax_rng)], 8.0, cine_phases, cine, enhanced=True),
        SeriesPlan(4, "cine_4ch", "cine_retro_4ch", "cine", "4ch", "bssfp",
                   [_long_axis_slab(four_ch_centre, -X, Z, heart_mm, cine_pixel, lax_rng)], 8.0, cine_phases, cine),
        SeriesPlan(5, "cine_3ch", "cine_retro_3ch", "cine", "3ch", "bssfp",
                   [_long_axis_slab(lax_centre, aortic, Z, heart_mm, cine_pixel, lax_rng)], 8.0, cine_phases, cine),
        SeriesPlan(6, "cine_sax", "cine_retro_sax", "cine", "sax", "bssfp",
                   [sax(cine_pixel)], 8.0, cine_phases, cine),
        SeriesPlan(7, "cine_aorta", "cine_retro_lvot_aorta", "cine", "aorta", "bssfp",
                   [_slab((a + b + d) / 3 - 20 * down, aorta_row, down, (fov, fov), cine_pixel)], 8.0, cine_phases, cine),
        SeriesPlan(8, "t1map_native", "MOLLI_T1_MAP_native_sax", "t1", "sax", "t1_native",
                   [_slab(map_centre, -X, -Y, (fov, 0.8 * fov), map_pixel, 3, map_spacing)], 8.0, diastole,
                   {**map_header, "image_type": ("DERIVED", "PRIMARY", "T1 MAP", "MOCO")}),
        SeriesPlan(9, "t2map", "T2_MAP_sax", "t2", "sax", "t2",
                   [_slab(map_centre, -X, -Y, (fov, 0.8 * fov), map_pixel, 3, map_spacing)], 8.0, diastole,
                   {**map_header, "image_type": ("DERIVED", "PRIMARY", "T2 MAP", "MOCO")}),
        SeriesPlan(10, "lge_sax", "LGE_PSIR_sax_MAG", "lge", "sax", "lge",
                   [sax(u(1.25, 1.6))], 8.0, diastole, lge_header),
        SeriesPlan(11, "t1map_post", "MOLLI_T1_MAP_post_sax", "t1", "sax", "t1_post",
                   [_slab(map_centre, -X, -Y, (fov, 0.8 * fov), map_pixel, 3, map_spacing)], 8.0, diastole,
                   {**map_header, "image_type": ("DERIVED", "PRIMARY", "T1 MAP", "MOCO")}),
    ]
    if distractors:
        plans += _distractor_plans(phantom, frames, lambda pixel: _slab(map_centre, -X, -Y, (fov, 0.8 * fov), pixel, 3,
                                                                        map_spacing))
    return plans


def _distractor_plans(phantom: HeartPhantom, frames: int, sax_levels) -> list[SeriesPlan]:
    """First-pass perfusion and phase-contrast flow (magnitude and phase): series a real exam
    holds that look like a short-axis or aortic cine to an image model, but whose headers say
    what they are (analysis/acquisition.py). Drawn from their own stream, so that the rest of
    the study is the same with or without them.

    Perfusion: basal, mid and apical short-axis slices (``sax_levels(pixel_mm)``), one frame
    per heartbeat over 40-60 beats, every frame at the same trigger delay. Flow: one plane
    across the ascending aorta, the cine's frames over one cycle, Siemens-style sequence name
    with the velocity encoding (``fl2d1_v150in``) and Image Type M or P.
    """
    p = phantom.params
    rng = np.random.default_rng([p.seed, 5])
    rr_ms = 60000.0 / p.heart_rate_bpm
    dynamics = int(rng.integers(40, 61))
    perfusion = {"sequence_name": "*tfl2d1_16", "scanning_sequence": ("GR",), "sequence_variant": ("SK", "SP", "MP"),
                 "echo_time": 1.1, "repetition_time": 2.3, "flip_angle": 12.0, "image_type": ("ORIGINAL", "PRIMARY", "M", "ND")}

    curve = phantom.aorta_curve
    normal = (curve[1] - curve[0]) / np.linalg.norm(curve[1] - curve[0])  # along the ascending aorta
    right = np.array([1.0, 0, 0]) - normal[0] * normal  # the patient's left to the right, as an axial view
    right /= np.linalg.norm(right)
    plane = _slab(curve[0] + 0.4 * (curve[1] - curve[0]), right, np.cross(normal, right), (300, 240),
                  float(rng.uniform(1.6, 2.0)))
    venc = float(rng.choice([150.0, 200.0]))
    flow = {"sequence_name": f"*fl2d1_v{venc:.0f}in", "scanning_sequence": ("GR",), "sequence_variant": ("SP",),
            "echo_time": 2.5, "repetition_time": 5.0, "flip_angle": 20.0}
    cine_phases = [k / frames for k in range(frames)]
    return [
        SeriesPlan(12, "perfusion_sax", "FIRSTPASS_sax_rest", "other", "sax", "perfusion",
                   [sax_levels(float(rng.uniform(2.0, 2.6)))], 8.0, [0.25] * dynamics, perfusion,
                   distractor="first-pass perfusion", dynamic_times=[k * rr_ms for k in range(dynamics)]),
        SeriesPlan(13, "flow_aorta", f"flow_AAo_v{venc:.0f}", "other", "other", "flow_magnitude",
                   [plane], 6.0, cine_phases, {**flow, "image_type": ("ORIGINAL", "PRIMARY", "M", "ND")},
                   distractor="phase-contrast flow, magnitude"),
        SeriesPlan(14, "flow_aorta_phase", f"flow_AAo_v{venc:.0f}_P", "other", "other", "flow_magnitude",
                   [plane], 6.0, cine_phases, {**flow, "image_type": ("ORIGINAL", "PRIMARY", "P", "ND")},
                   distractor="phase-contrast flow, phase (velocity)", velocity_encoding=venc),
    ]


def render_stack(phantom: HeartPhantom, stack: StackPlan, thickness: float, phases: list[float], table: np.ndarray,
                 look: CineLook | None = None):
    """Noise-free signal and labels of one stack: [slices, frames, rows, cols].

    Each pixel averages 2x2 in-plane by 3 through-plane samples (partial volume); labels
    are the tissue at the voxel centre. With a ``look`` (cines) the signal gets texture,
    trabeculae and the point spread of a real acquisition; the labels stay exact.
    """
    offsets_lps = _sample_offsets(stack, thickness)
    m = stack.ijk_to_lps
    shape = (stack.slices, len(phases), stack.rows, stack.cols)
    signal = np.empty(shape, np.float32)
    labels = np.empty(shape, np.uint8)
    fields = look.fields() if look is not None else None
    pixel_mm = float(np.linalg.norm(m[:3, 0]))
    for k, centres in enumerate(_stack_centres(stack)):
        samples = centres[:, :, None, :] + offsets_lps
        chest_samples, chest_centres = phantom.chest_tissue(samples), phantom.chest_tissue(centres)
        if fields is not None:  # static texture, evaluated once per slice at the pixel centres
            fine, coarse = fields[0](centres)[..., None], fields[1](centres)[..., None]
            grain = fields[0](centres * 0.8)  # a different cut of the field for trabeculae
        for f, phase in enumerate(phases):
            tissue = phantom.tissue(samples, phase, chest=chest_samples)
            labels[k, f] = labels_from_tissue(phantom.tissue(centres, phase, chest=chest_centres))
            if fields is None:
                signal[k, f] = table[tissue].mean(-1)
            else:
                textured = look.textured(table[tissue], tissue, fine, coarse).mean(-1)
                signal[k, f] = look.trabeculate(textured, labels[k, f], grain, pixel_mm)
    if look is not None:
        signal = look.blur(signal)
    return signal, labels


def render_dynamics(phantom: HeartPhantom, stack: StackPlan, thickness: float, phase: float, tables: list[np.ndarray]):
    """Noise-free signal and labels of a dynamic series: the heart at one cardiac phase, one
    tissue table per frame (e.g. a contrast bolus passing), [slices, frames, rows, cols]."""
    offsets_lps = _sample_offsets(stack, thickness)
    shape = (stack.slices, len(tables), stack.rows, stack.cols)
    signal = np.empty(shape, np.float32)
    labels = np.empty(shape, np.uint8)
    for k, centres in enumerate(_stack_centres(stack)):
        tissue = phantom.tissue(centres[:, :, None, :] + offsets_lps, phase)  # once: the tissue stays, the signal changes
        labels[k] = labels_from_tissue(phantom.tissue(centres, phase))
        for f, table in enumerate(tables):
            signal[k, f] = table[tissue].mean(-1)
    return signal, labels


def _aorta_velocity(phantom: HeartPhantom, stack: StackPlan, labels: np.ndarray, phases: list[float],
                    peak_cm_s: float) -> np.ndarray:
    """Through-plane velocity (cm/s) in the aorta pixels of ``labels`` [slices, frames, rows, cols]:
    up the ascending aorta (towards the plane's normal), down the descending one."""
    curve = phantom.aorta_curve
    tangents = np.gradient(curve, axis=0)
    normal = np.cross(stack.ijk_to_lps[:3, 0], stack.ijk_to_lps[:3, 1])
    centres = _stack_centres(stack)
    velocity = np.zeros(labels.shape, np.float32)
    for f, phase in enumerate(phases):
        aorta = labels[:, f] == Tissue.AORTA
        nearest = np.argmin(np.linalg.norm(centres[aorta][:, None] - curve, axis=-1), axis=1)
        direction = np.sign(tangents[nearest] @ normal)
        velocity[:, f][aorta] = direction * flow_velocity_cm_s(phase, peak_cm_s, phantom.params.es_phase)
    return velocity


def _sample_offsets(stack: StackPlan, thickness: float) -> np.ndarray:
    """LPS offsets of the 2x2 in-plane by 3 through-plane samples a pixel averages (partial volume)."""
    m = stack.ijk_to_lps
    normal = np.cross(m[:3, 0], m[:3, 1])
    normal /= np.linalg.norm(normal)
    offsets = np.array([[di, dj, dn] for di in (-0.25, 0.25) for dj in (-0.25, 0.25) for dn in (-1 / 3, 0, 1 / 3)])
    return offsets[:, :1] * m[:3, 0] + offsets[:, 1:2] * m[:3, 1] + offsets[:, 2:] * normal * thickness


def _stack_centres(stack: StackPlan) -> np.ndarray:
    """LPS of every voxel centre of a stack: [slices, rows, cols, 3]."""
    kk, jj, ii = np.mgrid[0 : stack.slices, 0 : stack.rows, 0 : stack.cols]
    return np.stack([ii, jj, kk], -1) @ stack.ijk_to_lps[:3, :3].T + stack.ijk_to_lps[:3, 3]


def _study_info(params: PhantomParameters, seed: int) -> SeriesInfo:
    extra = params.extra
    return SeriesInfo(
        study_uid=generate_uid(entropy_srcs=[f"cmrfm-synthetic-study-{seed}"]),
        frame_of_reference_uid=generate_uid(entropy_srcs=[f"cmrfm-synthetic-for-{seed}"]),
        study_date=f"2026{1 + seed % 12:02d}{1 + seed % 28:02d}",
        study_time="093000",
        study_description="Cardiac MR (synthetic)",
        patient_id=f"SYN{seed:05d}",
        patient_name=f"SYNTHETIC^CASE{seed:05d}",
        patient_sex=extra["sex"],
        patient_age=f"{extra['age']:03d}Y",
        patient_birth_date=f"{2026 - extra['age']}0101",
        patient_size=extra["height_m"],
        patient_weight=extra["weight_kg"],
        heart_rate=round(params.heart_rate_bpm),
        manufacturer="CMRFoundation synthetic",
        field_strength=1.5,
    )


def make_sample_study(out_dir: str | Path, seed: int = 0, *, pathology: str | None = None, frames: int = 25,
                      distractors: bool = False, progress=None) -> dict:
    """Generate a complete synthetic CMR study with ground truth; return the truth dict.

    ``pathology`` is one of NOR, DCM, HCM, MINF, RV (random for the seed when None).
    ``frames`` is the number of cine phases. The same seed gives the same study.
    ``distractors`` adds series 12-14, first-pass perfusion and phase-contrast flow
    (magnitude, phase), which no part may use; the other series stay exactly the same.
    ``progress``, if given, is called with a message per series.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; choose a new folder for the study")
    params = sample_parameters(seed, pathology)
    phantom = HeartPhantom(params)
    rng = np.random.default_rng([seed, 1])
    plans = plan_series(phantom, rng, frames, distractors)
    study = _study_info(params, seed)
    bias = CoilBias(rng, phantom.origin, params.body_half_depth_mm)
    tables = {name: seq.table(rng, jitter=0.06 if not seq.is_map else 0.03) for name, seq in SEQUENCES.items()}
    look = CineLook.draw(seed)
    bolus = Bolus.draw(np.random.default_rng([seed, 6]))
    rr_ms = 60000.0 / params.heart_rate_bpm
    (out / "ground_truth" / "labels").mkdir(parents=True)

    series_truth = []
    for plan in plans:
        if progress:
            progress(f"series {plan.number} {plan.description}")
        seq = SEQUENCES[plan.sequence]
        folder = out / "DICOM" / f"S{plan.number:03d}_{plan.name}"
        series_uid = generate_uid(entropy_srcs=[f"cmrfm-synthetic-series-{seed}-{plan.number}"])
        stacks_truth = []
        cine_look = look if plan.image_type == "cine" else None
        table = cine_look.table(tables[plan.sequence]) if cine_look else tables[plan.sequence]
        for s_index, stack in enumerate(plan.stacks):
            if plan.dynamic_times is not None:
                bolus_tables = [bolus_table(table, bolus, t / 1000) for t in plan.dynamic_times]
                signal, labels = render_dynamics(phantom, stack, plan.thickness, plan.phases[0], bolus_tables)
            else:
                signal, labels = render_stack(phantom, stack, plan.thickness, plan.phases, table, cine_look)
            noise_rng = np.random.default_rng([seed, plan.number, s_index])
            if seq.is_map:
                pixels = add_map_noise(signal, seq.noise, noise_rng)
            else:
                shading = bias(_stack_centres(stack))
                if cine_look:
                    shading = shading**cine_look.shading_power
                noise = seq.noise * table[Tissue.LV_BLOOD] * (cine_look.noise_gain if cine_look else 1.0)
                pixels = add_rician_noise(signal * shading[:, None], noise, noise_rng) * seq.scale
            if plan.velocity_encoding is not None:  # the phase images of the magnitude just rendered
                velocity = _aorta_velocity(phantom, stack, labels, plan.phases, 0.6 * plan.velocity_encoding)
                pixels = phase_image(velocity, pixels / seq.scale, noise, plan.velocity_encoding, noise_rng)
            info = replace(
                study,
                series_uid=series_uid,
                series_number=plan.number,
                series_description=plan.description,
                protocol_name=plan.description,
                slice_thickness=plan.thickness,
                **plan.header,
            )
            is_cine = len(plan.phases) > 1
            uids = write_mr_series(
                folder,
                pixels,
                stack.ijk_to_lps,
                info,
                frame_times=[ph * rr_ms for ph in plan.phases] if is_cine else None,
                dynamic_times=plan.dynamic_times,
                enhanced=plan.enhanced,
                uid_seed=f"{seed}-{plan.number}-{s_index}",
                file_prefix=f"IM{s_index}_" if len(plan.stacks) > 1 else "IM",
            )
            suffix = f"-{s_index + 1}" if len(plan.stacks) > 1 else ""
            label_file = f"labels/S{plan.number:03d}{suffix}.npz"
            np.savez_compressed(out / "ground_truth" / label_file, labels=labels, ijk_to_lps=stack.ijk_to_lps)
            stacks_truth.append(
                {
                    "label_file": label_file,
                    "shape": [stack.slices, len(plan.phases), stack.rows, stack.cols],
                    "ijk_to_lps": stack.ijk_to_lps.round(6).tolist(),
                    "first_sop_instance_uid": uids[0][0],
                }
            )
        series_truth.append(
            {
                "number": plan.number,
                "series_uid": series_uid,
                "description": plan.description,
                "folder": f"DICOM/{folder.name}",
                "image_type": plan.image_type,
                "view": plan.view,
                "sequence": plan.sequence,
                "enhanced_multiframe": plan.enhanced,
                "slice_thickness_mm": plan.thickness,
                "phases": plan.phases,
                "trigger_times_ms": [round(ph * rr_ms, 3) for ph in plan.phases],
                "stacks": stacks_truth,
                **({"distractor": plan.distractor} if plan.distractor else {}),
                **({"dynamic_times_ms": [round(t, 3) for t in plan.dynamic_times]} if plan.dynamic_times else {}),
                **({"velocity_encoding_cm_s": plan.velocity_encoding} if plan.velocity_encoding else {}),
            }
        )

    if progress:
        progress("ground truth measurements")
    truth = _measurements(phantom, plans, frames, tables)
    truth.update(
        {
            "format": TRUTH_FORMAT,
            "version": TRUTH_VERSION,
            "seed": seed,
            "patient": {
                "id": study.patient_id,
                "sex": study.patient_sex,
                "age": params.extra["age"],
                "height_m": study.patient_size,
                "weight_kg": study.patient_weight,
                "bsa_m2": round(float(np.sqrt(study.patient_size * 100 * study.patient_weight / 3600)), 3),
            },
            "study_uid": study.study_uid,
            "heart_rate_bpm": params.heart_rate_bpm,
            "rr_ms": rr_ms,
            "labels": {str(k): v for k, v in LABEL_NAMES.items()},
            "series": series_truth,
            "parameters": _jsonable(asdict(params)),
        }
    )
    (out / "ground_truth" / "study.json").write_text(json.dumps(truth, indent=1))
    return truth


def _measurements(phantom: HeartPhantom, plans: list[SeriesPlan], frames: int, tables: dict[str, np.ndarray]) -> dict:
    """Clinical truth: volumes, EF, mass, ED/ES frames, insertion points, map values."""
    p = phantom.params
    phases = [k / frames for k in range(frames)]
    lv_curve = [phantom.lv_cavity_volume_ml(ph) for ph in phases]
    ed, es = int(np.argmax(lv_curve)), int(np.argmin(lv_curve))
    at_ed, at_es = phantom.structure_volumes_ml(phases[ed]), phantom.structure_volumes_ml(phases[es])

    def ventricle(key):
        edv, esv = at_ed[key], at_es[key]
        return {"edv_ml": edv, "esv_ml": esv, "sv_ml": edv - esv, "ef": (edv - esv) / edv}

    sax = next(pl for pl in plans if pl.view == "sax" and pl.image_type == "cine")
    stack = sax.stacks[0]
    m = stack.ijk_to_lps
    u, v = m[:3, 0] / np.linalg.norm(m[:3, 0]), m[:3, 1] / np.linalg.norm(m[:3, 1])
    normal = np.cross(u, v)
    insertion = []
    for k in range(stack.slices):
        plane_point = m[:3, :3] @ [0, 0, k] + m[:3, 3]
        centre = phantom.axis_point_at(plane_point, normal)
        points = phantom.rv_insertion_points(centre, u, v, phases[ed])
        if points:
            insertion.append({"slice": k, "anterior_lps": points["anterior"].round(3).tolist(), "inferior_lps": points["inferior"].round(3).tolist()})

    def tissue_values(name):
        table = tables[name]
        return {"myocardium": float(table[Tissue.LV_MYOCARDIUM]), "blood": float(table[Tissue.LV_BLOOD]),
                "infarct": float(table[Tissue.INFARCT]), "mvo": float(table[Tissue.MVO])}

    return {
        "pathology": p.pathology,
        "lge_present": p.infarct is not None,
        "infarct": _jsonable(asdict(p.infarct)) if p.infarct else None,
        "cine": {"frames": frames, "ed_frame": ed, "es_frame": es, "phases": phases},
        "lv": {**ventricle("lv_blood_pool"), "myocardium_ml": at_ed["lv_myocardium"], "mass_g": 1.05 * at_ed["lv_myocardium"]},
        "rv": ventricle("rv_blood_pool"),
        "volumes_ed_ml": at_ed,
        "volumes_es_ml": at_es,
        "lv_volume_curve_ml": lv_curve,
        "rv_insertion_points": {"series_number": sax.number, "frame": ed, "slices": insertion},
        # Noise-free tissue values of this patient's maps (noise has zero mean).
        "map_values_ms": {"t1_native": tissue_values("t1_native"), "t1_post": tissue_values("t1_post"), "t2": tissue_values("t2")},
    }


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def load_truth(study_dir: str | Path) -> dict:
    """The ground truth of a synthetic study."""
    path = Path(study_dir) / "ground_truth" / "study.json"
    truth = json.loads(path.read_text())
    if truth.get("format") != TRUTH_FORMAT:
        raise ValueError(f"{path}: not a CMRFoundation synthetic ground truth file")
    return truth


def load_label_map(study_dir: str | Path, label_file: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels [slices, frames, rows, cols], ijk_to_lps) of one stack's ground truth."""
    with np.load(Path(study_dir) / "ground_truth" / label_file) as data:
        return data["labels"], data["ijk_to_lps"]

