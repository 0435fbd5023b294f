"""The analysis glue (analysis/geometry.py, parts/, select.py, classify.py) on real objects.

Each test builds real ImageStacks with hand-made geometry (or reads a synthetic study) and
checks what the glue does against values worked out here from that geometry, not copied
from the code. They were written because one-line slips in this glue (rows and columns
swapped when carrying insertion points, the base direction flipped, the mitral-plane guard
off, the slice count ignored in the ranking, a single frame taken for a cine) left the rest
of the suite green.

Geometry conventions (stack.py): voxel (i, j, k) = (column, row, slice);
``ijk_to_lps`` columns are the LPS steps of i, j and k; points are (row, col) pixels.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from CMRFoundationLib.analysis.classify import (
    StackClassification,
    classify_stack,
    guess_from_header,
)
from CMRFoundationLib.analysis.geometry import (
    SaxReference,
    basal_end_along,
    base_direction,
    carried_insertion_points,
    one_frame,
)
from CMRFoundationLib.analysis.parts.context import Context, FourChamberState, SaxState
from CMRFoundationLib.analysis.parts.helpers import segments_on
from CMRFoundationLib.analysis.parts.lge_extent import lge_partial_volume_slices
from CMRFoundationLib.analysis.predictors import Predictors
from CMRFoundationLib.analysis.results import PartResult, SeriesRecord
from CMRFoundationLib.analysis.select import select_series
from CMRFoundationLib.stack import ImageStack, SeriesInfo
from CMRFoundationLib.tasks import CINE_VIEWS, IMAGE_TYPES, get_task

X, Y, Z = np.eye(3)


def make_stack(origin, i_step, j_step, k_step, slices, rows, cols, frames=1, info=None, **kwargs) -> ImageStack:
    """A stack whose voxel (i, j, k) lies at origin + i*i_step + j*j_step + k*k_step (LPS mm)."""
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = i_step, j_step, k_step, origin
    pixels = np.zeros((slices, frames, rows, cols), np.float32)
    return ImageStack(pixels, m, info or SeriesInfo(), **kwargs)


# --- 1. insertion points carried from the cine to another stack -------------------------------------


def test_carried_insertion_points_land_on_the_target_grid_as_row_col():
    # Cine: 1.5 mm square pixels, i along +x, j along +y, slices from z=60 (base) down to z=0.
    cine = make_stack((-60.0, -50.0, 60.0), 1.5 * X, 1.5 * Y, -10.0 * Z, slices=7, rows=80, cols=80)
    # LGE: turned 90 degrees in plane, anisotropic pixels, another origin, slices 2 mm off the
    # cine's and in the opposite order (z = 2, 12, ..., 62).
    lge_origin = np.array([40.0, -90.0, 2.0])
    col_mm, row_mm = 1.0, 0.8
    lge = make_stack(lge_origin, col_mm * Y, -row_mm * X, 10.0 * Z, slices=7, rows=120, cols=150)
    # One anterior and one inferior point per cine slice, in the slice's plane (z = 60 - 10k),
    # different on every slice so that a wrong slice pairing shows.
    cine_z = 60.0 - 10.0 * np.arange(7)
    insertion = np.zeros((7, 2, 3))
    for k, z in enumerate(cine_z):
        insertion[k, 0] = (-20.0 + k, 10.0 - 2 * k, z)  # anterior
        insertion[k, 1] = (5.0 - k, 40.0 + k, z)  # inferior
    insertion[3] = np.nan  # a cine slice without points
    reference = SaxReference(cine, towards_base=Z, insertion_lps=insertion)

    points, how = carried_insertion_points(reference, lge)

    assert points is not None and points.shape == (7, 2, 2), how
    lge_z = 2.0 + 10.0 * np.arange(7)
    for k, z in enumerate(lge_z):
        source = int(np.argmin(np.abs(cine_z - z)))  # the nearest cine slice (2 mm away)
        if source == 3:  # no points there: the next nearest is 8 mm away, still within one spacing
            source = 4 if abs(cine_z[4] - z) < abs(cine_z[2] - z) else 2
        for p in range(2):
            x, y, _ = insertion[source, p]
            # Solve LPS = origin + col * 1.0 * Y - row * 0.8 * X by hand.
            expected_col = (y - lge_origin[1]) / col_mm
            expected_row = -(x - lge_origin[0]) / row_mm
            assert points[k, p] == pytest.approx([expected_row, expected_col], abs=1e-6), (k, p, how)
            assert abs(expected_row - expected_col) > 5  # off the diagonal: a swap would show
        # And back to patient space: the cine's point projected onto this LGE slice.
        back = lge.pixel_points_to_lps(points)[k]
        assert back == pytest.approx(np.c_[insertion[source, :, :2], [z, z]], abs=1e-6)


def test_carried_insertion_points_refuse_a_plane_that_is_not_parallel():
    cine = make_stack((0.0, 0.0, 0.0), X, Y, 10.0 * Z, slices=3, rows=10, cols=10)
    tilted = make_stack((0.0, 0.0, 0.0), X, np.cos(0.5) * Y + np.sin(0.5) * Z, 10.0 * Z, slices=3, rows=10, cols=10)
    insertion = np.zeros((3, 2, 3))
    points, how = carried_insertion_points(SaxReference(cine, Z, insertion), tilted)
    assert points is None and "degrees" in how


# --- 2. base direction of the LGE and map stacks --------------------------------------------------------


def test_basal_end_along_for_stacks_in_either_order():
    towards_base = Z  # the base lies at larger z in these stacks
    base_to_apex = make_stack((0.0, 0.0, 80.0), X, Y, -10.0 * Z, slices=8, rows=4, cols=4)
    apex_to_base = make_stack((0.0, 0.0, 10.0), X, Y, 10.0 * Z, slices=8, rows=4, cols=4)
    # The same base-to-apex order with the in-plane axes mirrored (its row x col normal is -z).
    mirrored = make_stack((0.0, 0.0, 80.0), X, -Y, -10.0 * Z, slices=8, rows=4, cols=4)
    assert basal_end_along(base_to_apex, towards_base) == "first"
    assert basal_end_along(apex_to_base, towards_base) == "last"
    assert basal_end_along(mirrored, towards_base) == "first"
    # base_direction is its inverse: the basal end gives back the direction to the base.
    assert base_direction(base_to_apex, "first") == pytest.approx(Z)
    assert base_direction(apex_to_base, "last") == pytest.approx(Z)
    assert base_direction(apex_to_base, "first") == pytest.approx(-Z)


PIXEL_MM, SIZE, CENTRE_RC = 1.0, 64, (32.0, 32.0)
INNER_MM, OUTER_MM = 9.0, 15.0
ANTERIOR_DEG, INFERIOR_DEG = -110.0, 130.0  # rows grow downwards: -90 deg is up (anterior)


def ring_labels(slices: int) -> np.ndarray:
    """LV blood pool (1) in a myocardial ring (2), the same on every slice (no size cue for the base)."""
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    radius = np.hypot(rows - CENTRE_RC[0], cols - CENTRE_RC[1]) * PIXEL_MM
    frame = np.zeros((SIZE, SIZE), np.uint8)
    frame[(radius > INNER_MM) & (radius <= OUTER_MM)] = 2
    frame[radius <= INNER_MM] = 1
    return np.repeat(frame[None], slices, 0)


def ring_insertion_rc(slices: int) -> np.ndarray:
    points = np.zeros((slices, 2, 2))
    for p, angle in enumerate((ANTERIOR_DEG, INFERIOR_DEG)):
        a = np.radians(angle)
        points[:, p] = (CENTRE_RC[0] + OUTER_MM * np.sin(a), CENTRE_RC[1] + OUTER_MM * np.cos(a))
    return points


def context_with_cine(cine: ImageStack, towards_base: np.ndarray, tmp_path) -> Context:
    """An analysis context whose short-axis cine part has run (points on every cine slice)."""
    reference = SaxReference(cine, towards_base, cine.pixel_points_to_lps(ring_insertion_rc(cine.n_slices)))
    labels = ring_labels(cine.n_slices)[:, None]
    # No weights: segments_on must manage with what the cine gives it.
    ctx = Context(Predictors(tmp_path / "no-weights", device="cpu"), lge_n_sd=5.0, flag=lambda *args: None)
    ctx.shared.sax = SaxState(cine, labels, get_task("seg_sax_cine").labels, 0, None, "first", reference)
    return ctx


@pytest.mark.parametrize("lge_order", ["apex_to_base", "base_to_apex"])
def test_lge_segments_put_the_basal_ring_at_the_cines_base(lge_order, tmp_path):
    # The cine runs from the base (z = 80) to the apex (z = 0); the base is towards +z.
    n = 9
    cine = make_stack((-32.0, -32.0, 80.0), PIXEL_MM * X, PIXEL_MM * Y, -10.0 * Z, slices=n, rows=SIZE, cols=SIZE)
    ctx = context_with_cine(cine, towards_base=Z, tmp_path=tmp_path)
    if lge_order == "apex_to_base":
        lge = make_stack((-32.0, -32.0, 0.0), PIXEL_MM * X, PIXEL_MM * Y, 10.0 * Z, slices=n, rows=SIZE, cols=SIZE)
    else:
        lge = make_stack((-32.0, -32.0, 80.0), PIXEL_MM * X, PIXEL_MM * Y, -10.0 * Z, slices=n, rows=SIZE, cols=SIZE)
    labels = ring_labels(n)
    part = PartResult("lge_extent", "LGE extent")

    aha, how = segments_on(ctx, part, lge, labels, 1, 2)

    assert aha is not None, how
    assert "carried over from the short-axis cine" in how
    z = lge.slice_origins_lps()[:, 2]
    by_height = np.argsort(-z)  # slice indices from the base (largest z) to the apex
    assert aha.basal_end == ("first" if by_height[0] == 0 else "last")
    for k in by_height[:3]:  # the three most basal slices
        assert set(np.unique(aha.segments[k])) - {0} == set(range(1, 7)), (k, how)
    for k in by_height[3:6]:
        assert set(np.unique(aha.segments[k])) - {0} == set(range(7, 13)), (k, how)
    for k in by_height[6:]:  # the three most apical slices
        assert set(np.unique(aha.segments[k])) - {0} == set(range(13, 17)), (k, how)


# --- 3. the mitral-plane partial-volume guard of the LGE ----------------------------------------------


def four_chamber_with_mitral_plane(ed_mitral_z: int, es_mitral_z: int) -> FourChamberState:
    """A 4-chamber plane (x across, rows going down in z, 1 mm pixels; row r at z = 90 - r)
    whose LV meets the LA at the given heights: frame 0 end-systole, frame 1 end-diastole
    (the larger LV). The apex is at z = 12 (ED) or 16 (ES)."""
    names = get_task("seg_4ch_cine").labels
    lv, myo, la = names.index("lv_blood_pool"), names.index("lv_myocardium"), names.index("la_blood_pool")
    ra = names.index("ra_blood_pool")
    rows, cols = 90, 60
    labels = np.zeros((2, rows, cols), np.uint8)

    def row_of(z):
        return 90 - z

    for frame, (mitral_z, apex_z) in enumerate(((es_mitral_z, 16), (ed_mitral_z, 12))):
        labels[frame, row_of(80) : row_of(mitral_z), 10:30] = la  # LA: z from mitral_z + 1 up to 80
        labels[frame, row_of(80) : row_of(mitral_z), 35:50] = ra
        labels[frame, row_of(mitral_z) : row_of(apex_z) + 1, 10:30] = lv  # LV: z from apex_z up to mitral_z
        labels[frame, row_of(mitral_z) : row_of(apex_z) + 3, 7:10] = myo
        labels[frame, row_of(mitral_z) : row_of(apex_z) + 3, 30:33] = myo
        labels[frame, row_of(apex_z) + 1 : row_of(apex_z) + 3, 10:30] = myo
    stack = make_stack((-30.0, 0.0, 90.0), X, -Z, Y, slices=1, rows=rows, cols=cols, frames=2)
    return FourChamberState(stack, 0, labels, names)


@pytest.mark.parametrize("order", ["apex_first", "base_first"])
def test_lge_slices_whose_slab_reaches_past_the_mitral_plane_are_left_out(order):
    # The LV meets the LA between z = 50 and 51 at end-diastole (the LGE's phase) and between
    # 40 and 41 at end-systole. LGE slices every 8 mm from z = 0 to 56, 8 mm thick: the slab of
    # the slice at z = 48 reaches 52, past the mitral plane though its centre is below it;
    # the slice at z = 40 reaches 44, well inside at ED (it would not be at ES).
    four = four_chamber_with_mitral_plane(ed_mitral_z=50, es_mitral_z=40)
    info = SeriesInfo(slice_thickness=8.0)
    if order == "apex_first":
        lge = make_stack((-30.0, -30.0, 0.0), X, Y, 8.0 * Z, slices=8, rows=40, cols=40, info=info)
    else:
        lge = make_stack((-30.0, -30.0, 56.0), X, -Y, -8.0 * Z, slices=8, rows=40, cols=40, info=info)
    labels = np.zeros((8, 40, 40), np.uint8)
    labels[:, 10:30, 10:30] = 2
    labels[:, 14:26, 14:26] = 1  # every slice has blood inside its ring: no cap slices
    z = lge.slice_origins_lps()[:, 2]

    excluded = lge_partial_volume_slices(four, lge, labels, lv=1, myo=2)

    reaching = {int(k) for k in np.flatnonzero(z + 4.0 > 50.5)}
    assert {int(k) for k in np.flatnonzero(np.isin(z, [48, 56]))} == reaching  # the set-up is what we think
    assert set(excluded) == reaching, excluded
    assert all("mitral plane" in why for why in excluded.values())
    assert int(np.flatnonzero(z == 40)[0]) not in excluded  # the end-diastolic plane counts, not the systolic
    # Without the 4-chamber cine nothing tells where the mitral plane is.
    assert lge_partial_volume_slices(None, lge, labels, lv=1, myo=2) == {}


# --- 4. which short-axis cine (and LGE) is used --------------------------------------------------------


def classification(image_type: str, p: float, view: str | None = None, p_view: float = 1.0) -> StackClassification:
    """A pixel classification that gives ``image_type`` (and ``view``) the probabilities p (and p_view)."""
    others = [t for t in IMAGE_TYPES if t != image_type]
    types = {image_type: p, **{t: (1 - p) / len(others) for t in others}}
    views = None
    if view is not None:
        other_views = [v for v in CINE_VIEWS if v != view]
        views = {view: p_view, **{v: (1 - p_view) / len(other_views) for v in other_views}}
    return StackClassification(image_type, "pixels", view=view, view_source="pixels" if view else "none",
                               image_type_probabilities=types, view_probabilities=views)


def sax_stack(slices: int, frames: int, number: int, description: str = "") -> ImageStack:
    info = SeriesInfo(series_number=number, series_description=description)
    return make_stack((0.0, 0.0, 0.0), X, Y, 8.0 * Z, slices=slices, rows=8, cols=8, frames=frames, info=info,
                      orientation_in_study="SAX-like")


@pytest.mark.parametrize("full_first", [True, False])
def test_the_short_axis_cine_and_lge_with_most_slices_are_chosen_over_a_more_probable_repeat(full_first):
    full_cine = SeriesRecord("S010", sax_stack(12, 20, 10), classification("cine", 0.80, "sax", 0.80))
    repeat_cine = SeriesRecord("S011", sax_stack(3, 20, 11), classification("cine", 0.99, "sax", 0.99))
    full_lge = SeriesRecord("S020", sax_stack(10, 1, 20), classification("lge", 0.70))
    repeat_lge = SeriesRecord("S021", sax_stack(2, 1, 21), classification("lge", 0.99))
    records = [full_cine, repeat_cine, full_lge, repeat_lge]
    if not full_first:
        records.reverse()

    chosen = select_series(records)

    assert chosen["cine_sax"].series == "S010", chosen["cine_sax"].reason
    assert chosen["lge_sax"].series == "S020", chosen["lge_sax"].reason
    assert [a["series"] for a in chosen["cine_sax"].alternatives] == ["S011"]
    assert "fewer slices (3 vs 12)" in chosen["cine_sax"].alternatives[0]["why_not"]


def test_equal_slice_counts_fall_back_to_probability_and_4ch_ranks_probability_first():
    sure = SeriesRecord("S010", sax_stack(10, 20, 10), classification("cine", 0.95, "sax", 0.95))
    unsure = SeriesRecord("S011", sax_stack(10, 20, 11), classification("cine", 0.60, "sax", 0.60))
    assert select_series([unsure, sure])["cine_sax"].series == "S010"
    # 4-chamber cine: the more probable one, even with fewer slices.
    few = SeriesRecord("S030", sax_stack(1, 20, 30), classification("cine", 0.95, "4ch", 0.95))
    many = SeriesRecord("S031", sax_stack(3, 20, 31), classification("cine", 0.90, "4ch", 0.50))
    assert select_series([many, few])["cine_4ch"].series == "S030"


def test_a_native_t1_map_is_used_before_a_post_contrast_one():
    native = SeriesRecord("S040", sax_stack(3, 1, 40, "MOLLI T1 map"), classification("t1", 0.6))
    post = SeriesRecord("S041", sax_stack(3, 1, 41, "MOLLI T1 map post"), classification("t1", 0.99))
    chosen = select_series([post, native])["t1_map"]
    assert chosen.series == "S040", chosen.reason


# --- 5. one frame is not a cine --------------------------------------------------------------------------


class FixedClassifier:
    """Stands in for a TaskPredictor of a classification task: the same probabilities for any stack."""

    def __init__(self, classes, first_choice, p=0.9):
        rest = (1 - p) / (len(classes) - 1)
        self.probabilities = np.array([p if c == first_choice else rest for c in classes])
        self.seen = []

    def predict_stack(self, stack, levels=None):
        self.seen.append(stack.pixels.shape)
        return SimpleNamespace(probabilities=self.probabilities)


def test_a_single_frame_is_never_classified_as_cine_even_when_the_model_says_so():
    info = SeriesInfo(series_number=5, series_description="SAX cine bSSFP")
    single = make_stack((0.0, 0.0, 0.0), X, Y, 8.0 * Z, slices=10, rows=8, cols=8, frames=1, info=info)
    cine_first = FixedClassifier(IMAGE_TYPES, "cine", p=0.9)
    sax_first = FixedClassifier(CINE_VIEWS, "sax")

    result = classify_stack(single, cine_first, sax_first)

    assert result.image_type != "cine" and result.image_type in IMAGE_TYPES
    assert result.view is None and not sax_first.seen  # the view model is for cines only
    assert any("single-frame" in note for note in result.notes)
    # The same stack with several frames is a cine: the model is heard there.
    multi = make_stack((0.0, 0.0, 0.0), X, Y, 8.0 * Z, slices=10, rows=8, cols=8, frames=12, info=info)
    assert classify_stack(multi, cine_first, sax_first).image_type == "cine"


def test_the_header_of_a_single_frame_does_not_make_it_a_cine():
    info = SeriesInfo(series_description="SAX cine bSSFP", protocol_name="cine_sax")
    assert guess_from_header(info, n_frames=1).image_type != "cine"
    assert guess_from_header(info, n_frames=25).image_type == "cine"
    single = make_stack((0.0, 0.0, 0.0), X, Y, 8.0 * Z, slices=10, rows=8, cols=8, frames=1, info=info)
    # No models at all: the header decides, and still not "cine".
    assert classify_stack(single, None, None).image_type != "cine"


def test_a_single_frame_of_the_synthetic_cine_is_not_used_as_the_short_axis_cine(sample_stacks, sample_truth):
    """Real synthetic DICOM: the short-axis cine, and one frame of it with more slices claimed by no model."""
    stacks, _ = sample_stacks
    number = next(s["number"] for s in sample_truth["series"] if s["image_type"] == "cine" and s["view"] == "sax")
    cine = max((s for s in stacks if s.info.series_number == number), key=lambda s: s.n_slices)
    assert cine.n_frames > 1
    frozen = one_frame(cine, 0)
    frozen.info = SeriesInfo(**{**cine.info.to_dict(), "series_number": 99})
    assert frozen.n_frames == 1 and frozen.n_slices == cine.n_slices

    # Neither has a model: both are classified from the header, which says cine for the real one only.
    records = [SeriesRecord("S099", frozen, classify_stack(frozen, None, None)),
               SeriesRecord("S" + f"{cine.info.series_number:03d}", cine, classify_stack(cine, None, None))]
    assert records[0].classification.image_type != "cine"
    assert records[1].classification.image_type == "cine"
    # Even if some classifier did call the single frame a cine, selection refuses it.
    records[0].classification = classification("cine", 0.99, "sax", 0.99)
    records[1].classification = classification("cine", 0.60, "sax", 0.60)
    chosen = select_series(records)["cine_sax"]
    assert chosen.series == records[1].key, chosen.reason
    assert any(a["series"] == "S099" and "single frame" in a["why_not"] for a in chosen.alternatives)
