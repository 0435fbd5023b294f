"""Mask operations shared by the library and the training code, all through SimpleITK:
connected components, and in-plane dilation and erosion.

"In plane" means over the last two axes (rows, cols) of a mask of any number of
dimensions: a [slices, rows, cols] stack is grown or shrunk slice by slice, never across
slices. Outside the image counts as background unless an erosion is told otherwise.

SimpleITK is imported on use: a training machine without it (the GPU image) still imports
the measurements.
"""

from __future__ import annotations

import numpy as np

KERNELS = ("box", "cross", "disc")


def label_components(mask: np.ndarray, fully_connected: bool) -> np.ndarray:
    """Connected components of a 2D or 3D mask: 0 outside, 1..n inside (int array).

    ``fully_connected``: neighbours share a face, edge or corner (8-connected in 2D,
    26 in 3D); otherwise a face only (4-connected in 2D, 6 in 3D).
    """
    import SimpleITK as sitk

    mask = np.asarray(mask, dtype=bool)
    if mask.ndim not in (2, 3):
        raise ValueError(f"components need a 2D or 3D mask, got shape {mask.shape}")
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    return sitk.GetArrayFromImage(sitk.ConnectedComponent(image, fully_connected)).astype(np.int64)


def dilate_in_plane(mask: np.ndarray, radius: int = 1, kernel: str = "box") -> np.ndarray:
    """``mask`` grown by ``radius`` pixels in plane. ``kernel``: "box" (8-neighbour steps:
    the (2r+1)^2 square), "cross" (4-neighbour, radius 1 only) or "disc" (every pixel within
    Euclidean distance ``radius``, i.e. offsets with dr^2 + dc^2 <= r^2)."""
    mask = np.asarray(mask, dtype=bool)
    if radius == 0 or not mask.any():
        return mask.copy()
    import SimpleITK as sitk

    if kernel == "disc":
        # ITK's ball kernel is not the exact disc: the exact distance to the mask instead, plane by plane.
        planes = mask.reshape(-1, *mask.shape[-2:])
        grown = planes.copy()
        for k, plane in enumerate(planes):
            if plane.any():
                image = sitk.GetImageFromArray(plane.astype(np.uint8))
                squared = sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=True)
                grown[k] |= sitk.GetArrayFromImage(squared) <= radius * radius
        return grown.reshape(mask.shape)
    image = sitk.BinaryDilate(_as_image(mask), _radius(mask, radius), _kernel(kernel, radius), 0.0, 1.0)
    return sitk.GetArrayFromImage(image).reshape(mask.shape).astype(bool)


def erode_in_plane(mask: np.ndarray, radius: int = 1, kernel: str = "cross", border_inside: bool = False) -> np.ndarray:
    """``mask`` shrunk by ``radius`` pixels in plane (kernels as for :func:`dilate_in_plane`,
    without "disc"). ``border_inside``: pixels beyond the image edge count as inside the mask
    (an edge pixel survives), else as outside (it is removed)."""
    mask = np.asarray(mask, dtype=bool)
    if radius == 0 or not mask.any():
        return mask.copy()
    import SimpleITK as sitk

    image = sitk.BinaryErode(_as_image(mask), _radius(mask, radius), _kernel(kernel, radius), 0.0, 1.0, border_inside)
    return sitk.GetArrayFromImage(image).reshape(mask.shape).astype(bool)


def _as_image(mask: np.ndarray):
    """A 2D image, or a 3D one of the planes stacked (any leading axes flattened)."""
    import SimpleITK as sitk

    if mask.ndim < 2:
        raise ValueError(f"an in-plane operation needs [..., rows, cols], got shape {mask.shape}")
    planes = mask if mask.ndim == 2 else mask.reshape(-1, *mask.shape[-2:])
    return sitk.GetImageFromArray(planes.astype(np.uint8))


def _radius(mask: np.ndarray, radius: int) -> list[int]:
    """ITK's (x, y[, z]) radius: ``radius`` over cols and rows, 0 across planes."""
    return [int(radius), int(radius)] + ([0] if mask.ndim > 2 else [])


def _kernel(kernel: str, radius: int):
    import SimpleITK as sitk

    if kernel == "box":
        return sitk.sitkBox
    if kernel == "cross" and radius == 1:
        return sitk.sitkCross  # ITK's cross of radius r > 1 is a plus sign, not a diamond: not offered
    raise ValueError(f"unknown kernel {kernel!r} (radius {radius}); use one of {', '.join(KERNELS)}")
