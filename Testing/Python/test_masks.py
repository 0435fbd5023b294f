"""The shared mask operations (CMRFoundationLib.measurements.masks) on masks small enough to
check by hand: kernel shapes, the image edge, 4- against 8-connectivity, planes kept apart."""

import numpy as np
import pytest

from CMRFoundationLib.measurements.masks import dilate_in_plane, erode_in_plane, label_components


def _dot(shape=(9, 9), at=(4, 4)):
    mask = np.zeros(shape, dtype=bool)
    mask[at] = True
    return mask


def test_box_dilation_grows_a_square_and_stops_at_the_edge():
    assert np.argwhere(dilate_in_plane(_dot(), 2)).tolist() == [[r, c] for r in range(2, 7) for c in range(2, 7)]
    corner = dilate_in_plane(_dot(at=(0, 0)), 1)
    assert corner.sum() == 4 and corner[:2, :2].all()


def test_disc_dilation_holds_the_offsets_within_the_radius():
    grown = dilate_in_plane(_dot(), 2, kernel="disc")
    rows, cols = np.nonzero(grown)
    offsets = sorted(zip((rows - 4).tolist(), (cols - 4).tolist()))
    assert offsets == sorted((dr, dc) for dr in range(-2, 3) for dc in range(-2, 3) if dr * dr + dc * dc <= 4)
    assert len(offsets) == 13  # (1, 2) is outside: 5 > 4
    assert np.array_equal(dilate_in_plane(_dot(), 0, kernel="disc"), _dot())


def test_dilation_stays_in_its_plane():
    stack = np.zeros((3, 5, 5), dtype=bool)
    stack[1, 2, 2] = True
    grown = dilate_in_plane(stack, 1)
    assert not grown[0].any() and not grown[2].any() and grown[1].sum() == 9
    assert not dilate_in_plane(stack, 1, kernel="disc")[[0, 2]].any()


def test_cross_erosion_and_the_image_edge():
    block = np.zeros((5, 5), dtype=bool)
    block[1:4, 1:4] = True
    assert np.argwhere(erode_in_plane(block)).tolist() == [[2, 2]]
    # A block on the top-left edge: beyond the edge is outside (gone) or inside (kept).
    edge = np.zeros((4, 4), dtype=bool)
    edge[:2, :2] = True
    assert not erode_in_plane(edge).any()
    assert np.argwhere(erode_in_plane(edge, border_inside=True)).tolist() == [[0, 0]]


def test_diagonal_neighbours_join_only_when_fully_connected():
    diagonal = np.eye(4, dtype=bool)
    assert label_components(diagonal, fully_connected=True).max() == 1
    four = label_components(diagonal, fully_connected=False)
    assert sorted(four[diagonal].tolist()) == [1, 2, 3, 4] and not four[~diagonal].any()
    # In 3D a shared face joins across slices; a shared corner only when fully connected.
    cube = np.zeros((2, 3, 3), dtype=bool)
    cube[0, 1, 1] = cube[1, 1, 1] = cube[1, 2, 2] = True
    assert label_components(cube, fully_connected=False).max() == 2
    assert label_components(cube, fully_connected=True).max() == 1


def test_unknown_kernels_and_shapes_are_refused():
    with pytest.raises(ValueError, match="unknown kernel 'disc'"):
        erode_in_plane(_dot(), kernel="disc")
    with pytest.raises(ValueError, match="unknown kernel 'cross'"):
        dilate_in_plane(_dot(), 2, kernel="cross")
    with pytest.raises(ValueError, match="2D or 3D"):
        label_components(np.ones(4, dtype=bool), fully_connected=True)
