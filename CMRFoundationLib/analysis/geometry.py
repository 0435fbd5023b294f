"""Geometry shared by the analysis steps: single frames, slice gaps, and carrying the cine's
RV insertion points and base direction over to the LGE and map stacks.

Why carry the insertion points over rather than run the landmark model on LGE and maps:
the rv_insertion model was trained on short-axis cine, where the RV blood pool is bright
and the junctions are crisp; on LGE (dark myocardium, bright scar) and on maps it has
not been trained. The junctions are anatomical points that move little between the
cine's end-diastole and the mid-diastolic LGE and maps, and sites plan those stacks on
the cine's positions. So each target slice takes the points of the cine slice nearest
to it in patient space (within one cine slice spacing), projected onto its own plane.
The model on the target stack is the fallback when there is no cine, or the planes are
not parallel.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..stack import ImageStack, numbered

# Planes within this angle count as parallel (same short-axis planning).
PARALLEL_DEG = 10.0


def one_frame(stack: ImageStack, frame: int) -> ImageStack:
    """The stack reduced to one cardiac frame, keeping its provenance."""
    def pick(rows):
        return None if rows is None else [[row[frame]] for row in rows]

    return dataclasses.replace(
        stack,
        pixels=stack.pixels[:, frame : frame + 1],
        frame_times=None if stack.frame_times is None else stack.frame_times[frame : frame + 1],
        sources=pick(stack.sources),
        sop_instance_uids=pick(stack.sop_instance_uids),
        warnings=list(stack.warnings),
    )


def slice_gap_findings(stack: ImageStack) -> list[str]:
    """Missing slices (a gap over 1.5x the median) and extra ones (under half of it), in words."""
    positions = np.sort(np.asarray(stack.slice_positions if stack.slice_positions is not None else [], dtype=float))
    if positions.size < 3:
        return []
    gaps = np.diff(positions)
    median = float(np.median(gaps))
    findings = []
    for k, gap in enumerate(gaps):
        if gap > 1.5 * median:
            missing = int(round(gap / median)) - 1
            findings.append(f"gap of {gap:.1f} mm between slices {numbered(k)} and {numbered(k + 1)} (usual {median:.1f} mm): "
                            f"about {max(missing, 1)} slice(s) missing")
        elif gap < 0.5 * median:
            findings.append(f"slices {numbered(k)} and {numbered(k + 1)} only {gap:.1f} mm apart (usual {median:.1f} mm): extra or repeated slice")
    return findings


def slice_axis(stack: ImageStack) -> np.ndarray:
    """Unit LPS vector of increasing slice index."""
    k = stack.ijk_to_lps[:3, 2]
    return k / np.linalg.norm(k)


def base_direction(stack: ImageStack, basal_end: str) -> np.ndarray:
    """Unit LPS vector pointing from apex to base, given which end of ``stack`` is basal."""
    return -slice_axis(stack) if basal_end == "first" else slice_axis(stack)


def basal_end_along(stack: ImageStack, towards_base: np.ndarray) -> str:
    """Which end of ``stack`` ("first" or "last") lies towards the base."""
    return "last" if float(slice_axis(stack) @ towards_base) > 0 else "first"


def plane_angle_deg(a: ImageStack, b: ImageStack) -> float:
    return float(np.degrees(np.arccos(min(1.0, abs(float(a.normal @ b.normal))))))


@dataclasses.dataclass
class SaxReference:
    """What later steps borrow from the short-axis cine at end-diastole."""

    stack: ImageStack
    towards_base: np.ndarray  # unit LPS vector from apex to base
    insertion_lps: np.ndarray | None = None  # [slices, 2 (anterior, inferior), 3], NaN where none


def carried_insertion_points(reference: SaxReference, target: ImageStack) -> tuple[np.ndarray | None, str]:
    """Insertion points ``[slices, 2, 2]`` (row, col) for ``target`` from the cine, and how they were found.

    None (with the reason) when the cine has none or the planes are not parallel.
    """
    if reference.insertion_lps is None or not np.isfinite(reference.insertion_lps).all(axis=(1, 2)).any():
        return None, "the short-axis cine has no RV insertion points"
    angle = plane_angle_deg(reference.stack, target)
    if angle > PARALLEL_DEG:
        return None, f"the planes differ from the short-axis cine's by {angle:.0f} degrees"
    normal = target.normal
    cine = reference.stack
    cine_depth = cine.slice_origins_lps() @ normal
    target_depth = target.slice_origins_lps() @ normal
    cine_spacing = float(np.median(np.abs(np.diff(cine_depth)))) if cine.n_slices > 1 else float(cine.spacing[2])
    with_points = np.flatnonzero(np.isfinite(reference.insertion_lps).all(axis=(1, 2)))
    points = np.full((target.n_slices, 2, 2), np.nan)
    used = []
    for k, depth in enumerate(target_depth):
        distance = np.abs(cine_depth[with_points] - depth)
        nearest = int(np.argmin(distance))
        if distance[nearest] <= cine_spacing:
            ijk = target.lps_to_ijk_points(reference.insertion_lps[with_points[nearest]])
            points[k] = ijk[:, [1, 0]]  # (row, col) = (j, i); the out-of-plane k is dropped
            used.append(f"{k}<-{int(with_points[nearest])}")
    if not used:
        return None, "no slice lies within one cine slice spacing of a cine slice with insertion points"
    return points, "carried over from the short-axis cine at end-diastole (slice<-cine slice: " + ", ".join(used) + ")"
