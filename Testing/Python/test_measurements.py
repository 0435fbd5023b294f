"""Clinical measurements: analytic phantoms with known answers, then the synthetic study's truth."""

import json

import numpy as np
import pytest

from CMRFoundationLib.measurements import (
    aha_segments,
    atria_over_cine,
    atrium_measures,
    function_from_volume_curves,
    guess_basal_end,
    label_volumes_ml,
    lge_extent,
    map_values,
    mosteller_bsa_m2,
    segmental_wall_thickness,
    slice_levels,
    slice_thicknesses,
    ventricular_function,
)
from CMRFoundationLib.synthetic.study import load_label_map, load_truth, make_sample_study


def as_json(result) -> str:
    """to_dict() must be plain JSON: no numpy types, no NaN."""
    return json.dumps(result.to_dict(), allow_nan=False)


def grid_mm(rows, cols, col_mm, row_mm, centre_rc):
    """(x, y) in mm of every pixel relative to a centre; x along columns, y along rows (down)."""
    r, c = np.mgrid[:rows, :cols]
    return (c - centre_rc[1]) * col_mm, (r - centre_rc[0]) * row_mm


# --- volumes --------------------------------------------------------------------------------


def test_stacked_ellipses_sum_to_their_analytic_volume():
    col_mm, row_mm, slice_mm = 0.25, 0.3, 8.0
    x, y = grid_mm(260, 300, col_mm, row_mm, (130, 150))
    semi_axes = [(30, 25), (28, 22), (24, 20), (18, 15), (10, 9)]  # mm, along x and y
    labels = np.zeros((len(semi_axes), 1, *x.shape), np.uint8)
    for k, (a, b) in enumerate(semi_axes):
        labels[k, 0][(x / a) ** 2 + (y / b) ** 2 <= 1] = 1
    expected_ml = sum(np.pi * a * b for a, b in semi_axes) * slice_mm / 1000
    measured = label_volumes_ml(labels, 1, np.diag([col_mm, row_mm, slice_mm, 1.0]))
    assert measured.shape == (1,)
    assert measured[0] == pytest.approx(expected_ml, rel=0.005)
    # A sheared or rotated geometry keeps the pixel area and the distance between slices.
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    rotated = np.eye(4)
    rotated[:3, :3] = rotation @ np.diag([col_mm, row_mm, slice_mm])
    rotated[:3, 2] += 3.0 * rotation[:, 0]  # slices shifted in-plane: spacing along the normal stays 8 mm
    assert label_volumes_ml(labels, 1, rotated)[0] == pytest.approx(measured[0], rel=1e-12)


def test_irregular_slice_positions_use_half_gaps_to_the_neighbours():
    positions = [0.0, 8.0, 16.0, 30.0, 38.0]  # a 6 mm gap (missing slice) between 16 and 30
    geometry = np.diag([0.5, 0.5, 8.0, 1.0])
    # Interior slices reach half-way to each neighbour; end slices the gap to their neighbour.
    assert slice_thicknesses(5, geometry, positions) == pytest.approx([8.0, 8.0, 11.0, 11.0, 8.0])
    assert slice_thicknesses(5, geometry, positions[::-1]) == pytest.approx([8.0, 11.0, 11.0, 8.0, 8.0])
    assert slice_thicknesses(5, geometry, [0, 8, 16, 24, 32]) == pytest.approx(slice_thicknesses(5, geometry))
    x, y = grid_mm(120, 120, 0.5, 0.5, (60, 60))
    radii = [20.0, 18.0, 15.0, 12.0, 6.0]
    labels = np.zeros((5, 1, 120, 120), np.uint8)
    for k, r in enumerate(radii):
        labels[k, 0][x**2 + y**2 <= r**2] = 1
    expected = sum(np.pi * r**2 * t for r, t in zip(radii, [8, 8, 11, 11, 8])) / 1000
    assert label_volumes_ml(labels, 1, geometry, positions)[0] == pytest.approx(expected, rel=0.01)
    with pytest.raises(ValueError, match="same position"):
        slice_thicknesses(3, geometry, [0.0, 8.0, 8.0])


def disc_cine(lv_radii_mm, myocardium_mm=8.0, rv_radius_mm=14.0, slices=4):
    """A cylinder-like LV: every slice holds the same disc, one radius per frame."""
    col_mm = row_mm = 0.4
    x, y = grid_mm(220, 260, col_mm, row_mm, (110, 150))
    labels = np.zeros((slices, len(lv_radii_mm), *x.shape), np.uint8)
    lv_area, myo_area = [], []
    for t, r in enumerate(lv_radii_mm):
        outer = np.sqrt(r**2 + (18.0**2 - 12.0**2))  # myocardial area conserved
        frame = np.zeros(x.shape, np.uint8)
        frame[x**2 + y**2 <= outer**2] = 2
        frame[x**2 + y**2 <= r**2] = 1
        frame[(x + 45) ** 2 + y**2 <= (rv_radius_mm * r / max(lv_radii_mm)) ** 2] = 3
        labels[:, t] = frame
        lv_area.append(np.pi * r**2)
        myo_area.append(np.pi * (outer**2 - r**2))
    to_ml = slices * 10 / 1000  # area (mm^2) x slices x 10 mm
    return labels, np.diag([col_mm, row_mm, 10.0, 1.0]), np.array(lv_area) * to_ml, np.array(myo_area) * to_ml


def test_cine_gives_ed_es_ef_mass_and_indexed_values():
    radii = [16.0, 17.5, 15.0, 11.0, 9.5, 12.0, 14.5]  # ED at frame 1, ES at frame 4
    labels, geometry, lv_ml, myo_ml = disc_cine(radii)
    result = ventricular_function(labels, geometry, height_cm=180, weight_kg=80)
    assert (result.ed_frame, result.es_frame) == (1, 4)
    assert result.lv.edv_ml == pytest.approx(lv_ml[1], rel=0.01)
    assert result.lv.esv_ml == pytest.approx(lv_ml[4], rel=0.01)
    expected_ef = 100 * (1 - (9.5 / 17.5) ** 2)
    assert result.lv.ef_percent == pytest.approx(expected_ef, abs=0.5)
    assert result.lv.sv_ml == pytest.approx(result.lv.edv_ml - result.lv.esv_ml)
    assert result.lv_mass_g == pytest.approx(1.05 * myo_ml[1], rel=0.01)
    assert result.bsa_m2 == pytest.approx(2.0)  # sqrt(180 * 80 / 3600)
    assert result.lv.edv_index_ml_m2 == pytest.approx(result.lv.edv_ml / 2.0)
    assert result.lv_mass_index_g_m2 == pytest.approx(result.lv_mass_g / 2.0)
    # The RV (scaled with the LV here) is read at the LV's ED and ES frames.
    assert result.rv.ef_percent == pytest.approx(expected_ef, abs=1.0)
    assert np.argmax(result.lv_volume_curve_ml) == 1 and len(result.rv_volume_curve_ml) == len(radii)
    assert result.warnings == []
    assert json.loads(as_json(result))["lv"]["edv_ml"] == pytest.approx(result.lv.edv_ml)


def test_curves_with_missing_frames_ties_and_empty_labels():
    # Frame 3 lost its LV (a failed segmentation): it must not become end-systole.
    result = function_from_volume_curves([150.0, 160.0, 90.0, 0.0, 90.0, 160.0], [140, 150, 80, 0, 85, 150], [100] * 6)
    assert (result.ed_frame, result.es_frame) == (1, 2)  # ties: the earliest frame
    assert result.lv.ef_percent == pytest.approx(100 * 70 / 160)
    assert result.lv_volume_curve_ml[3] is None and any("frame(s) 4;" in w for w in result.warnings)  # frame 4, counted from 1
    assert result.bsa_m2 is None and result.lv.edv_index_ml_m2 is None
    as_json(result)
    one_frame = function_from_volume_curves([150.0], height_cm=170)
    assert one_frame.es_frame is None and one_frame.lv.ef_percent is None and one_frame.lv.edv_ml == 150.0
    assert any("end-systole" in w for w in one_frame.warnings) and any("BSA" in w for w in one_frame.warnings)
    no_rv = function_from_volume_curves([150.0, 90.0], [0.0, 0.0])
    assert no_rv.rv.edv_ml is None and no_rv.rv.ef_percent is None and any("RV" in w for w in no_rv.warnings)
    with pytest.raises(ValueError, match="empty in every frame"):
        ventricular_function(np.zeros((3, 2, 16, 16), np.uint8), np.eye(4))
    with pytest.raises(ValueError, match=r"\[slices, frames, rows, cols\]"):
        ventricular_function(np.zeros((3, 16, 16), np.uint8), np.eye(4))
    with pytest.raises(ValueError, match="positive"):
        mosteller_bsa_m2(0, 70)


# --- AHA segments ---------------------------------------------------------------------------

SIZE, CENTRE = 129, (64, 64)
COL_MM, ROW_MM, SLICE_MM = 0.5, 0.6, 8.0  # anisotropic on purpose: angles must be taken in mm
INNER_MM, OUTER_MM = 12.0, 20.0
# In these phantoms y grows downwards (rows), so -90 deg is anterior (up) and +90 inferior.
# The RV is on the left (180 deg): anterior insertion at -110 (= 250), inferior at 130, so
# the septal arc runs 250 -> 190 -> 130 (120 deg, bisector at 190).
ANTERIOR_DEG, INFERIOR_DEG = -110.0, 130.0
GEOMETRY = np.diag([COL_MM, ROW_MM, SLICE_MM, 1.0])


def ring_stack(slices=9, outer_mm=lambda phi: np.full_like(phi, OUTER_MM)):
    """LV blood pool (1) and myocardium (2), the same ring on every slice; also each pixel's angle."""
    x, y = grid_mm(SIZE, SIZE, COL_MM, ROW_MM, CENTRE)
    radius, phi = np.hypot(x, y), np.degrees(np.arctan2(y, x))
    frame = np.zeros((SIZE, SIZE), np.uint8)
    frame[(radius > INNER_MM) & (radius <= outer_mm(phi))] = 2
    frame[radius <= INNER_MM] = 1
    return np.repeat(frame[None], slices, 0), radius, phi


def insertion_pixels(slices, with_points, anterior_deg=ANTERIOR_DEG, inferior_deg=INFERIOR_DEG):
    """[slices, 2, 2] (row, col) insertion points on the epicardium; NaN elsewhere."""
    points = np.full((slices, 2, 2), np.nan)
    for k in with_points:
        for i, angle in enumerate((anterior_deg, inferior_deg)):
            a = np.radians(angle)
            points[k, i] = (CENTRE[0] + OUTER_MM * np.sin(a) / ROW_MM, CENTRE[1] + OUTER_MM * np.cos(a) / COL_MM)
    return points


def segment_in_direction(segments, k, phi_deg, radius_mm=16.0):
    """The segment of the mid-wall pixel in direction phi on slice k."""
    row = int(round(CENTRE[0] + radius_mm * np.sin(np.radians(phi_deg)) / ROW_MM))
    col = int(round(CENTRE[1] + radius_mm * np.cos(np.radians(phi_deg)) / COL_MM))
    return int(segments[k, row, col])


def expected_segments(phi, level):
    """Analytic AHA segment for angles phi of this phantom (septum reached by decreasing angle)."""
    walked = np.mod(ANTERIOR_DEG - phi, 360)  # degrees from the anterior insertion, through the septum
    if level == "apical":
        from_septal_edge = np.mod(walked - 60 + 45, 360)  # septal sector centred on the bisector (60 deg in)
        segments = np.array([14, 15, 16, 13])[(from_septal_edge // 90).astype(int)]
        return segments, np.minimum(from_septal_edge % 90, 90 - from_septal_edge % 90)
    first = {"basal": 1, "mid": 7}[level]
    order = np.array([2, 3, 4, 5, 6, 1]) + first - 1
    return order[(walked // 60).astype(int)], np.minimum(walked % 60, 60 - walked % 60)


def test_aha_segments_match_the_analytic_sectors():
    labels, radius, phi = ring_stack()
    # Points on the basal and mid slices only: the apical ones borrow slice 5's angles.
    aha = aha_segments(labels, GEOMETRY, insertion_pixels(9, range(6)), basal_end="first")
    assert aha.slice_levels == ["basal"] * 3 + ["mid"] * 3 + ["apical"] * 3
    assert aha.slices[7].insertion_slice == 5 and aha.slices[7].septal_arc_deg == pytest.approx(120, abs=0.5)
    assert aha.present_segments == list(range(1, 17))
    # Spot checks, walking from the anterior insertion point through the septum.
    for k, level_first in ((1, 1), (4, 7)):
        for offset, basal in ((30, 2), (90, 3), (150, 4), (210, 5), (270, 6), (330, 1)):
            assert segment_in_direction(aha.segments, k, ANTERIOR_DEG - offset) == basal + level_first - 1, (k, offset)
    for direction, apical in ((190, 14), (140, 15), (240, 13), (100, 15), (10, 16), (-80, 13)):
        assert segment_in_direction(aha.segments, 7, direction) == apical, direction
    # Every myocardium pixel, away from a sector border, is in its analytic segment.
    myocardium = labels == 2
    for k, level in enumerate(aha.slice_levels):
        expected, margin = expected_segments(phi, level)
        clear = myocardium[k] & (margin > 1.0)
        assert np.array_equal(aha.segments[k][clear], expected[clear]), k
        assert (aha.segments[k][~myocardium[k]] == 0).all()
    report = json.loads(as_json(aha))
    assert report["slice_levels"][0] == "basal" and report["slice_segments"][8] == [13, 14, 15, 16]


def test_mirrored_heart_still_labels_the_septum_septal():
    labels, _, phi = ring_stack()
    points = insertion_pixels(9, range(9))
    original = aha_segments(labels, GEOMETRY, points, basal_end="first")
    mirrored_points = points.copy()
    mirrored_points[..., 1] = SIZE - 1 - points[..., 1]  # RV on the right now
    mirrored = aha_segments(labels[:, :, ::-1], GEOMETRY, mirrored_points, basal_end="first")
    assert original.slices[0].turn == -mirrored.slices[0].turn
    # Septum is now at 0 deg: right-up of it anteroseptal, right-down inferoseptal, the left lateral.
    assert segment_in_direction(mirrored.segments, 0, -20) == 2
    assert segment_in_direction(mirrored.segments, 0, 50) == 3
    assert segment_in_direction(mirrored.segments, 0, 170) == 5
    assert segment_in_direction(mirrored.segments, 4, 10) == 9
    assert segment_in_direction(mirrored.segments, 8, -10) == 14
    _, margin = expected_segments(phi, "basal")
    clear = margin[:, ::-1] > 1.0
    for k in range(9):
        assert np.array_equal(mirrored.segments[k][clear], original.segments[k][:, ::-1][clear]), k


def test_base_guess_levels_and_missing_points():
    x, y = grid_mm(SIZE, SIZE, COL_MM, ROW_MM, CENTRE)
    radius = np.hypot(x, y)
    labels = np.zeros((10, SIZE, SIZE), np.uint8)
    for k in range(10):  # a cone: widest at slice 0, RV on the upper slices only
        outer = 24.0 - 1.5 * k
        labels[k][radius <= outer] = 2
        labels[k][radius <= outer - 7] = 1
        if k < 6:
            labels[k][(x + outer + 6) ** 2 + y**2 <= 36] = 3
    assert guess_basal_end(labels) == "first"
    assert guess_basal_end(labels[::-1]) == "last"
    cylinder = np.repeat(labels[:1], 6, 0)
    cylinder[:3][cylinder[:3] == 3] = 0  # same LV everywhere: the RV decides
    assert guess_basal_end(cylinder) == "last"
    # Ten slices: the basal third takes the extra one.
    assert slice_levels(labels == 2, "last") == ["apical"] * 3 + ["mid"] * 3 + ["basal"] * 4
    guessed = aha_segments(labels[::-1], GEOMETRY, insertion_pixels(10, [9]))
    assert guessed.basal_end == "last" and guessed.slice_levels[9] == "basal" and any("guessed" in w for w in guessed.warnings)
    with pytest.raises(ValueError, match="insertion"):
        aha_segments(labels, GEOMETRY, insertion_pixels(10, []), basal_end="first")
    with pytest.raises(ValueError, match="slices, 2"):
        aha_segments(labels, GEOMETRY, np.zeros((10, 2)), basal_end="first")
    with pytest.raises(ValueError, match="myocardium"):
        guess_basal_end(np.zeros((3, 8, 8), np.uint8))


def test_wall_thickness_of_rings_with_known_radii():
    labels, _, _ = ring_stack()
    points = insertion_pixels(9, range(9))
    aha = aha_segments(labels, GEOMETRY, points, basal_end="first")
    thickness = segmental_wall_thickness(labels, GEOMETRY, aha).by_segment()
    assert sorted(thickness) == list(range(1, 17))
    assert all(abs(value - (OUTER_MM - INNER_MM)) < 0.35 for value in thickness.values()), thickness
    # A septum (left half) 4 mm thicker than the free wall.
    thick_septum, _, _ = ring_stack(outer_mm=lambda phi: np.where(np.cos(np.radians(phi)) < 0, OUTER_MM + 4, OUTER_MM))
    aha = aha_segments(thick_septum, GEOMETRY, points, basal_end="first")
    result = segmental_wall_thickness(thick_septum, GEOMETRY, aha)
    by_segment = result.by_segment()
    for septal in (2, 3, 8, 9):
        assert by_segment[septal] == pytest.approx(12.0, abs=0.35), septal
    for lateral in (5, 6, 11, 12):
        assert by_segment[lateral] == pytest.approx(8.0, abs=0.35), lateral
    as_json(result)


# --- LGE --------------------------------------------------------------------------------------


def lge_phantom(seed=3):
    """Rings with the inner half of the basal and mid inferolateral + anterolateral wall enhanced."""
    labels, radius, phi = ring_stack()
    walked = np.mod(ANTERIOR_DEG - phi, 360)
    scar_in_plane = (walked >= 180) & (walked < 300) & (radius <= 16.0) & (labels[0] == 2)
    scar = np.zeros(labels.shape, bool)
    scar[:6] = scar_in_plane  # basal and mid slices: segments 5, 6, 11, 12
    image = np.select([labels == 1, labels == 2], [300.0, 100.0], 0.0)
    image[scar] = 400.0
    image += np.random.default_rng(seed).normal(0, 10, image.shape)
    aha = aha_segments(labels, GEOMETRY, insertion_pixels(9, range(9)), basal_end="first")
    return image, labels, aha, scar


def test_lge_extent_finds_the_enhanced_segments():
    image, labels, aha, scar = lge_phantom()
    result = lge_extent(image, labels, GEOMETRY, aha)
    assert np.array_equal(result.enhanced, scar)
    assert result.remote_segment not in (5, 6, 11, 12)
    assert result.threshold == pytest.approx(150, abs=6) and result.remote_sd == pytest.approx(10, rel=0.15)
    inner_half = 100 * (16.0**2 - INNER_MM**2) / (OUTER_MM**2 - INNER_MM**2)  # 43.75 % of the wall's area
    extent = result.by_segment()
    for segment in range(1, 17):
        if segment in (5, 6, 11, 12):
            assert extent[segment] == pytest.approx(inner_half, abs=2.0), segment
        else:
            assert extent[segment] == 0.0, segment
    voxel_ml = COL_MM * ROW_MM * SLICE_MM / 1000
    assert result.enhanced_ml == pytest.approx(scar.sum() * voxel_ml)
    assert result.enhanced_percent == pytest.approx(100 * scar.sum() / (labels == 2).sum())
    assert result.lge_present
    # n moves the threshold by whole remote SDs; a very high n finds nothing.
    lower = lge_extent(image, labels, GEOMETRY, aha, n_sd=3)
    assert result.threshold - lower.threshold == pytest.approx(2 * result.remote_sd)
    none = lge_extent(image, labels, GEOMETRY, aha, n_sd=40)
    assert none.enhanced_ml == 0 and not none.lge_present
    as_json(result)


def test_lge_small_islands_and_user_remote_region():
    image, labels, aha, scar = lge_phantom()
    islands = [(7, 64, 64 + 28), (7, 64 - 26, 64), (8, 64 + 26, 64)]  # lone bright pixels, apical wall
    for k, r, c in islands:
        assert labels[k, r, c] == 2
        image[k, r, c] = 1000.0
    with_islands = lge_extent(image, labels, GEOMETRY, aha)
    assert with_islands.enhanced.sum() == scar.sum() + len(islands)
    cleaned = lge_extent(image, labels, GEOMETRY, aha, min_component_pixels=5)
    assert np.array_equal(cleaned.enhanced, scar)
    remote = aha.segments == 2
    by_hand = lge_extent(image, labels, GEOMETRY, None, remote_mask=remote, presence_cutoff_percent=50)
    assert by_hand.remote_segment is None and by_hand.segments == []
    assert by_hand.remote_mean == pytest.approx(image[remote].mean())
    assert not by_hand.lge_present  # about 10 % enhanced, under a 50 % cut-off
    with pytest.raises(ValueError, match="remote"):
        lge_extent(image, labels, GEOMETRY, None)


def test_lge_partial_volume_rims_and_excluded_slices():
    image, labels, aha, scar = lge_phantom()
    # A one-pixel bright rim on the blood border of the septum (apical slice 7): partial volume.
    blood = np.pad(labels == 1, ((0, 0), (1, 1), (1, 1)))
    on_border = (labels == 2) & (blood[:, :-2, 1:-1] | blood[:, 2:, 1:-1] | blood[:, 1:-1, :-2] | blood[:, 1:-1, 2:])
    rim = np.zeros_like(scar)
    rim[7] = on_border[7] & (aha.segments[7] == 14)
    assert rim.sum() >= 5
    image[rim] = 400.0
    assert np.array_equal(lge_extent(image, labels, GEOMETRY, aha).enhanced, scar | rim)
    cleaned = lge_extent(image, labels, GEOMETRY, aha, blood_pool=1, drop_border_rims=True)
    assert np.array_equal(cleaned.enhanced, scar)  # the scar reaches deeper than one pixel: it stays
    with pytest.raises(ValueError, match="blood_pool"):
        lge_extent(image, labels, GEOMETRY, aha, drop_border_rims=True)
    # Excluded slices count neither as myocardium nor as scar.
    without_base = lge_extent(image, labels, GEOMETRY, aha, excluded_slices=[0, 1, 2])
    assert not without_base.enhanced[:3].any()
    assert without_base.myocardium_ml == pytest.approx(cleaned.myocardium_ml * 6 / 9)
    assert without_base.enhanced_ml == pytest.approx(lge_extent(image, labels, GEOMETRY, aha).enhanced_ml * (scar[3:].sum() + rim.sum()) / (scar.sum() + rim.sum()))


# --- T1 / T2 maps --------------------------------------------------------------------------


def segment_valued_map(labels, phi, blood=1600.0):
    """Map value 800 + 25 x (analytic segment) in the myocardium, partial volume at the endocardium."""
    aha_levels = ["basal"] * 3 + ["mid"] * 3 + ["apical"] * 3
    values = np.zeros(labels.shape)
    for k, level in enumerate(aha_levels):
        values[k] = 800.0 + 25.0 * expected_segments(phi, level)[0]
    image = np.where(labels == 2, values, np.where(labels == 1, blood, 0.0))
    blood_pool = np.pad(labels == 1, ((0, 0), (1, 1), (1, 1)))
    touches_blood = blood_pool[:, :-2, 1:-1] | blood_pool[:, 2:, 1:-1] | blood_pool[:, 1:-1, :-2] | blood_pool[:, 1:-1, 2:]
    border = (labels == 2) & touches_blood
    image[border] = (image[border] + blood) / 2
    return image


def test_map_values_per_segment():
    labels, _, phi = ring_stack()
    aha = aha_segments(labels, GEOMETRY, insertion_pixels(9, range(9)), basal_end="first")
    image = segment_valued_map(labels, phi)
    image[0, 64, 64 + 30] = np.nan  # a failed fit in the wall is ignored
    result = map_values(image, labels, aha)
    for n in range(1, 17):
        assert result.segments[n].mean == pytest.approx(800 + 25 * n, rel=0.01), n
        assert result.segments[n].eroded
    assert np.isfinite(result.global_values.mean) and result.warnings == []
    # Without erosion the blood-pool partial volume biases the values upwards.
    raw = map_values(image, labels, aha, erode=False)
    assert raw.global_values.mean > result.global_values.mean * 1.01
    assert raw.global_values.pixels > result.global_values.pixels
    as_json(result)


def test_map_values_fall_back_where_erosion_empties_a_segment():
    def outer(phi):  # the basal inferolateral wall (walked 180..240) is only 0.5 mm thick
        walked = np.mod(ANTERIOR_DEG - phi, 360)
        return np.where((walked > 180) & (walked < 240), INNER_MM + 0.5, OUTER_MM)

    labels, _, phi = ring_stack(outer_mm=outer)
    aha = aha_segments(labels, GEOMETRY, insertion_pixels(9, range(9)), basal_end="first")
    image = segment_valued_map(labels, phi, blood=1000.0)
    result = map_values(image, labels, aha)
    assert not result.segments[5].eroded and result.segments[4].eroded
    assert any("segment 5" in w for w in result.warnings)
    assert result.segments[5].mean == pytest.approx(800 + 25 * 5, rel=0.12)  # thin: all of it touches blood
    assert result.segments[4].mean == pytest.approx(800 + 25 * 4, rel=0.01)
    with pytest.raises(ValueError, match="myocardium"):
        map_values(image, np.zeros_like(labels))


# --- atria --------------------------------------------------------------------------------------


def four_chamber(long_mm, short_mm=20.0, col_mm=0.4, row_mm=0.5):
    """A half-ellipse LA (label 3) standing on a ventricle (label 1) at the valve row; an RA disc (4)."""
    rows, cols = 200, 260
    r, c = np.mgrid[:rows, :cols]
    x, y = (c - 100) * col_mm, r * row_mm
    valve_y = 60.25  # between rows 120 (atrium) and 121 (ventricle)
    frame = np.zeros((rows, cols), np.uint8)
    frame[(y > valve_y) & (np.abs(x) <= 25)] = 1
    frame[((x / short_mm) ** 2 + ((y - valve_y) / long_mm) ** 2 <= 1) & (y < valve_y)] = 3
    frame[(x - 40) ** 2 + (y - 30) ** 2 <= 12**2] = 4
    return frame, (col_mm, row_mm)


def test_atrium_area_length_and_volume_of_a_half_ellipse():
    frame, spacing = four_chamber(long_mm=50.0)
    la = atrium_measures(frame, spacing, atrium=3, ventricle=1)
    area_mm2 = np.pi * 50 * 20 / 2
    assert la.area_cm2 == pytest.approx(area_mm2 / 100, rel=0.01)
    assert la.length_mm == pytest.approx(50.0, abs=0.75)  # tip pixel centre is within half a pixel
    assert la.valve_midpoint_rc == pytest.approx((120.0, 100.0))
    # 8 A^2 / (3 pi L) of a half ellipse is the volume of the half ellipsoid of revolution, 2/3 pi a b^2.
    assert la.volume_ml == pytest.approx(2 / 3 * np.pi * 50 * 20**2 / 1000, rel=0.03)
    ra = atrium_measures(frame, spacing, atrium=4, ventricle=1)
    assert ra.length_mm is None and ra.volume_ml is None and "does not touch" in ra.warnings[0]
    assert ra.area_cm2 == pytest.approx(np.pi * 12**2 / 100, rel=0.02)


def test_atria_over_a_cine_report_the_largest_frame():
    lengths = [45.0, 50.0, 58.0, 52.0]
    cine = np.stack([four_chamber(long_mm=a)[0] for a in lengths])[None]  # [1, frames, rows, cols]
    result = atria_over_cine(cine, (0.4, 0.5, 8.0))  # ImageStack.spacing order; seg_4ch_cine labels
    assert result.la.max_frame == 2
    assert result.la.at_max.length_mm == pytest.approx(58.0, abs=0.75)
    assert result.la.to_dict()["volume_ml"][0] == pytest.approx(2 / 3 * np.pi * 45 * 400 / 1000, rel=0.03)
    # seg_4ch_cine has no RV label: the RA gets an area only.
    assert result.ra.at_max.volume_ml is None and any("no ventricle" in w for w in result.ra.at_max.warnings)
    json.dumps(result.to_dict(), allow_nan=False)


# --- the synthetic study's ground truth --------------------------------------------------------

# Phantom label values (phantom.LABEL_NAMES): the infarct and MVO are LV myocardium too.
LV_BLOOD, LV_MYOCARDIUM, RV_BLOOD, LA, RA = 1, (2, 8, 9), 3, 5, 6
# Coronary territories in AHA segments; the generator puts LAD at 60 deg from the septum
# towards anterior, RCA at -75 (inferior), LCX at 175 (lateral): see phantom.TERRITORIES.
TERRITORY_SEGMENTS = {"LAD": {1, 2, 7, 8, 13, 14}, "RCA": {3, 4, 9, 10, 15}, "LCX": {5, 6, 11, 12, 16}}


@pytest.fixture(scope="module")
def minf_study(sample_study, sample_truth, tmp_path_factory):
    """The shared sample study when it has an infarct, else a small MINF study of its own."""
    if sample_truth.get("infarct"):
        return sample_study, sample_truth
    folder = tmp_path_factory.mktemp("minf") / "study"
    make_sample_study(folder, seed=11, pathology="MINF", frames=4)
    return folder, load_truth(folder)


def series_of(truth, view, image_type):
    return next(s for s in truth["series"] if s["view"] == view and s["image_type"] == image_type)


def truth_insertion_pixels(truth, ijk_to_lps, n_slices):
    """The truth RV insertion points (LPS) as [slices, 2, 2] (row, col) pixels of a SAX stack."""
    lps_to_ijk = np.linalg.inv(ijk_to_lps)
    points = np.full((n_slices, 2, 2), np.nan)
    for entry in truth["rv_insertion_points"]["slices"]:
        for i, key in enumerate(("anterior_lps", "inferior_lps")):
            i_col, j_row, k = lps_to_ijk[:3, :3] @ entry[key] + lps_to_ijk[:3, 3]
            points[int(round(k)), i] = (j_row, i_col)
    return points


def test_truth_sax_volumes_match_the_phantom(sample_study, sample_truth):
    sax = series_of(sample_truth, "sax", "cine")
    labels, ijk_to_lps = load_label_map(sample_study, sax["stacks"][0]["label_file"])
    patient = sample_truth["patient"]
    result = ventricular_function(
        labels, ijk_to_lps, lv_blood=LV_BLOOD, lv_myocardium=LV_MYOCARDIUM, rv_blood=RV_BLOOD,
        height_cm=100 * patient["height_m"], weight_kg=patient["weight_kg"],
    )
    lv, rv = sample_truth["lv"], sample_truth["rv"]
    # Slice summation against the phantom's analytic volumes (seed 11, MINF, 8 mm slices):
    # LV EDV -2.0 %, ESV -1.6 %, EF -0.2 points, mass -2.1 %, RV EDV -2.2 %, RV EF -0.1 points.
    assert (result.ed_frame, result.es_frame) == (sample_truth["cine"]["ed_frame"], sample_truth["cine"]["es_frame"])
    assert result.lv.edv_ml == pytest.approx(lv["edv_ml"], rel=0.10)
    assert result.lv.esv_ml == pytest.approx(lv["esv_ml"], rel=0.10)
    assert result.lv.ef_percent == pytest.approx(100 * lv["ef"], abs=5)
    assert result.lv_mass_g == pytest.approx(lv["mass_g"], rel=0.10)
    assert result.rv.edv_ml == pytest.approx(rv["edv_ml"], rel=0.10)
    assert result.rv.ef_percent == pytest.approx(100 * rv["ef"], abs=5)
    assert result.bsa_m2 == pytest.approx(patient["bsa_m2"], abs=0.005)
    assert result.warnings == []


def test_truth_sax_aha_segments_septum_and_infarct_territory(minf_study):
    study, truth = minf_study
    sax = series_of(truth, "sax", "cine")
    labels, ijk_to_lps = load_label_map(study, sax["stacks"][0]["label_file"])
    frame = labels[:, truth["rv_insertion_points"]["frame"]]
    points = truth_insertion_pixels(truth, ijk_to_lps, frame.shape[0])
    assert guess_basal_end(frame, lv_myocardium=LV_MYOCARDIUM) == "last"  # slices run apex to base
    aha = aha_segments(frame, ijk_to_lps, points, basal_end="last", lv_myocardium=LV_MYOCARDIUM)
    assert aha.present_segments == list(range(1, 17))
    myocardium = np.isin(frame, LV_MYOCARDIUM)
    assert np.array_equal(aha.segments > 0, myocardium)
    # Myocardium touching the RV blood pool lies in the septal segments.
    rv = np.pad(frame == RV_BLOOD, ((0, 0), (1, 1), (1, 1)))
    touches_rv = myocardium & (rv[:, :-2, 1:-1] | rv[:, 2:, 1:-1] | rv[:, 1:-1, :-2] | rv[:, 1:-1, 2:])
    in_septal = np.isin(aha.segments[touches_rv], [2, 3, 8, 9, 14])
    assert touches_rv.sum() > 100 and in_septal.mean() > 0.85, in_septal.mean()  # seed 11: 0.93
    # The truth infarct lies in its coronary territory (seed 11: LCX, all of it).
    infarct = np.isin(frame, (8, 9))
    in_territory = np.isin(aha.segments[infarct], sorted(TERRITORY_SEGMENTS[truth["infarct"]["territory"]]))
    assert infarct.sum() > 100 and in_territory.mean() > 0.8, in_territory.mean()


def test_lge_series_of_the_study_finds_the_infarct(minf_study):
    from CMRFoundationLib.dicom import read_study

    study, truth = minf_study
    lge = series_of(truth, "sax", "lge")
    labels, ijk_to_lps = load_label_map(study, lge["stacks"][0]["label_file"])
    (stack,), _ = read_study(study / lge["folder"])
    assert np.allclose(stack.ijk_to_lps, ijk_to_lps, atol=1e-3)
    frame, image = labels[:, 0], stack.pixels[:, 0]
    # The LGE stack shares the cine's slice planes, so the cine's insertion points carry over.
    points = truth_insertion_pixels(truth, ijk_to_lps, frame.shape[0])
    aha = aha_segments(frame, ijk_to_lps, points, basal_end="last", lv_myocardium=LV_MYOCARDIUM)
    result = lge_extent(image, frame, ijk_to_lps, aha, lv_myocardium=LV_MYOCARDIUM)
    infarct = np.isin(frame, (8, 9))
    truth_percent = 100 * infarct.sum() / np.isin(frame, LV_MYOCARDIUM).sum()
    dice = 2 * (result.enhanced & infarct).sum() / (result.enhanced.sum() + infarct.sum())
    # Seed 11: 12.8 % enhanced against 10.6 % truth, Dice 0.90; the excess is partial volume.
    assert result.lge_present and dice > 0.8, dice
    assert result.enhanced_percent == pytest.approx(truth_percent, abs=5)
    territory = TERRITORY_SEGMENTS[truth["infarct"]["territory"]]
    assert result.remote_segment not in territory
    enhanced_segments = {n for n, percent in result.by_segment().items() if percent > 10}
    assert enhanced_segments and enhanced_segments <= territory, result.by_segment()


def test_t2_map_of_the_study_needs_the_erosion(sample_study, sample_truth):
    from CMRFoundationLib.dicom import read_study

    t2 = series_of(sample_truth, "sax", "t2")
    labels, _ = load_label_map(sample_study, t2["stacks"][0]["label_file"])
    (stack,), _ = read_study(sample_study / t2["folder"])
    truth_t2 = sample_truth["map_values_ms"]["t2"]["myocardium"]
    # Healthy myocardium only (the infarct has its own T2). Seed 11: eroded +0.8 %, raw +17 %.
    eroded = map_values(stack.pixels[:, 0], labels[:, 0], lv_myocardium=2)
    raw = map_values(stack.pixels[:, 0], labels[:, 0], lv_myocardium=2, erode=False)
    assert eroded.global_values.mean == pytest.approx(truth_t2, rel=0.03)
    assert raw.global_values.mean > truth_t2 * 1.05


def test_atria_of_the_study_four_chamber_cine(sample_study, sample_truth):
    four = series_of(sample_truth, "4ch", "cine")
    labels, ijk_to_lps = load_label_map(sample_study, four["stacks"][0]["label_file"])
    spacing = np.linalg.norm(ijk_to_lps[:3, :3], axis=0)
    result = atria_over_cine(labels, spacing, la=LA, ra=RA, lv=LV_BLOOD, rv=RV_BLOOD)
    at_es = sample_truth["volumes_es_ml"]
    # Single-plane area-length against the phantom's 3D volumes. Seed 11: LA +6.6 %, RA -2.3 %.
    assert result.la.max_frame == sample_truth["cine"]["es_frame"]
    assert result.la.at_max.volume_ml == pytest.approx(at_es["la_blood_pool"], rel=0.2)
    assert result.ra.at_max.volume_ml == pytest.approx(at_es["ra_blood_pool"], rel=0.2)


def test_insertion_points_join_segmentation_and_heatmaps():
    from CMRFoundationLib.measurements.insertion_points import joined_insertion_points, stack_insertion_points

    yy, xx = np.mgrid[:64, :64]
    frame = np.zeros((64, 64), np.uint8)
    frame[np.hypot(yy - 32, xx - 18) < 12] = 3  # RV beside the LV
    frame[np.hypot(yy - 32, xx - 36) < 12] = 2
    frame[np.hypot(yy - 32, xx - 36) < 7] = 1
    labels = np.stack([frame, np.zeros_like(frame)])  # the second slice has no heart
    seg = stack_insertion_points(labels, lv_blood=1, lv_myocardium=2, rv_blood=3)
    assert np.isfinite(seg[0]).all() and np.isnan(seg[1]).all()
    assert seg[0, 0, 0] < 32 < seg[0, 1, 0]  # anterior above, inferior below, RV on the left
    heat = seg + 20.0  # the heatmap model disagrees on the heart slice (30 mm off) ...
    heat[1] = 5.0  # ... and answers where the segmentation gives nothing
    joined, source = joined_insertion_points(seg, heat)
    np.testing.assert_array_equal(joined[0], seg[0])  # the segmentation's contact arc wins
    np.testing.assert_array_equal(joined[1], heat[1])  # the model fills the gap
    assert source.tolist() == [["segmentation", "segmentation"], ["heatmap", "heatmap"]]
    joined, source = joined_insertion_points(seg, np.full_like(seg, np.nan))
    assert source[1].tolist() == ["", ""] and np.isnan(joined[1]).all()
