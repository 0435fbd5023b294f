"""What the acquisition header says a series can be, independent of its pixels.

A first-pass perfusion series looks like a short-axis cine to an image model (a heart in
a short-axis plane, many frames), and its "volumes" give an EF near 100 %. Its header
knows better: a cine's frames sample one heart cycle (trigger delays from 0 to about one
RR interval), perfusion repeats the same trigger delay over tens of seconds; phase-
contrast flow writes phase (velocity) images and encodes a velocity (VENC) in magnitude and
phase alike; LGE is an inversion-recovery acquisition. These are facts of the acquisition,
not free text, so a series whose header contradicts its pixel class on them is not used
for that class, and one whose header rules out every class we analyse (``not_analysable``:
flow, perfusion) is named as such whatever its pixels say.
"""

from __future__ import annotations

import re

import numpy as np

from ..stack import ImageStack

# A cine's frames cover one cardiac cycle; allow arrhythmia and trigger-window slack.
MAX_CINE_CYCLES = 1.5
# Without a heart rate: no heart cycle lasts this long (a rate of 24 per minute).
MAX_CINE_SPAN_MS = 2500.0
# DICOM Image Type values of phase-contrast phase (velocity) images.
PHASE_IMAGE_TYPES = {"P", "PHASE", "VELOCITY", "PHASE_CONTRAST"}
# Siemens writes the velocity encoding into the sequence name of both the magnitude and the
# phase series of a flow acquisition: "*fl2d1_v150in" (VENC 150 cm/s, through-plane).
VELOCITY_ENCODED_SEQUENCE = re.compile(r"_v(\d+)(in|through|rl|ap|fh)?$", re.IGNORECASE)


def acquisition_problem(stack: ImageStack, image_type: str) -> str | None:
    """Why the header rules out ``image_type`` for this stack, or None (also when the header is silent)."""
    info = stack.info
    flow = _flow_problem(info)
    if flow is not None:
        return flow
    if image_type == "cine":
        return _cine_timing_problem(stack)
    if image_type == "lge" and stack.sources is not None and info.scanning_sequence:
        if "IR" not in {s.upper() for s in info.scanning_sequence} and not info.inversion_time:
            return (f"no inversion recovery (Scanning Sequence {_joined(info.scanning_sequence)}, no Inversion "
                    "Time): late enhancement is imaged with an inversion pulse")
    return None


def not_analysable(stack: ImageStack) -> str | None:
    """Why the header alone rules out every part of the analysis, or None: a flow series, or
    frames that are not one heart cycle (a cine must be one; LGE and maps have one frame)."""
    if stack.n_frames > 1:
        return acquisition_problem(stack, "cine")
    return _flow_problem(stack.info)


def _flow_problem(info) -> str | None:
    if PHASE_IMAGE_TYPES & {value.upper() for value in info.image_type}:
        return f"its Image Type ({_joined(info.image_type)}) marks phase (velocity) images: a flow series"
    venc = VELOCITY_ENCODED_SEQUENCE.search(info.sequence_name.strip())
    if venc:
        return (f"its sequence name ({info.sequence_name}) encodes a velocity (VENC {venc.group(1)} cm/s): "
                "a phase-contrast flow series")
    return None


def _joined(values) -> str:
    return "\\".join(values)  # as DICOM writes multi-valued attributes


def _cine_timing_problem(stack: ImageStack) -> str | None:
    times = stack.frame_times
    if stack.n_frames < 2 or times is None or len(times) != stack.n_frames or not np.isfinite(times).all():
        return None
    if np.ptp(times) == 0:
        return (f"all {stack.n_frames} frames have the same trigger delay ({times[0]:g} ms): the same cardiac phase "
                "repeated over time (perfusion or a dynamic series), not a cine through one heart cycle")
    span = float(np.ptp(times)) * stack.n_frames / (stack.n_frames - 1)  # the last frame lasts one interval too
    rate = stack.info.heart_rate
    if rate:
        cycle = 60000.0 / rate
        if span > MAX_CINE_CYCLES * cycle:
            return (f"its frames span {span / 1000:.1f} s, {span / cycle:.0f} heart cycles at {rate:g} per minute: "
                    "a cine covers one cycle (perfusion or a dynamic series?)")
    elif span > MAX_CINE_SPAN_MS:
        return f"its frames span {span / 1000:.1f} s, longer than any heart cycle: not a cine"
    return None
