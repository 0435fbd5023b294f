"""The report's charts, inline SVG: volume curves, AHA bull's-eye plots and probability bars."""

from __future__ import annotations

import math

import numpy as np

from ...measurements.aha import AHA_SEGMENT_NAMES
from ...measurements.bullseye import (
    COLOUR_STOPS,
    NO_DATA,
    SEGMENT_PLACES,
    colour_of,
    finite_values,
    fixed_scale,
    value_range,
)
from ...terminology import STRUCTURES
from ..results import PartResult
from .markup import DIGITS, _css, _e, _number, _unit


def _volume_curves_svg(results: dict, stack) -> str:
    """LV and RV volume over the cardiac cycle, one point per frame, with ED and ES marked."""
    curves = [(name, results.get(f"{name}_volume_curve_ml")) for name in ("lv", "rv")]
    curves = [(name, values) for name, values in curves if values]
    if not curves:
        return ""
    n = len(curves[0][1])
    times = stack.frame_times
    if times is not None and len(times) == n and np.all(np.diff(times) > 0):
        xs, x_label = [float(t) for t in times], "time from the R wave (ms)"
    else:
        xs, x_label = [float(i + 1) for i in range(n)], "frame"  # numbered from 1, as the report counts
    found = [v for _, values in curves for v in values if v is not None]
    y_max = max(found) * 1.1 if found and max(found) > 0 else 1.0
    x_lo, x_hi = xs[0], (xs[-1] if xs[-1] > xs[0] else xs[0] + 1)
    width, height, left, right, top, bottom = 560, 280, 60, 110, 20, 45
    plot_right, plot_bottom, middle_y = width - right, height - bottom, (top + height - bottom) / 2

    def x_of(x):
        return left + (x - x_lo) / (x_hi - x_lo) * (plot_right - left)

    def y_of(y):
        return plot_bottom - y / y_max * (plot_bottom - top)

    svg = [f'<svg class="curve" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="Ventricular volumes over the cardiac cycle">']
    for y in _ticks(0, y_max):
        svg.append(f'<line x1="{left}" x2="{plot_right}" y1="{y_of(y):.1f}" y2="{y_of(y):.1f}" stroke="#e5e5e5"/>'
                   f'<text x="{left - 6}" y="{y_of(y) + 4:.1f}" text-anchor="end" font-size="11">{y:g}</text>')
    for x in _ticks(x_lo, x_hi):
        svg.append(f'<text x="{x_of(x):.1f}" y="{plot_bottom + 16}" text-anchor="middle" font-size="11">{x:g}</text>')
    svg.append(f'<line x1="{left}" x2="{plot_right}" y1="{plot_bottom}" y2="{plot_bottom}" stroke="#333"/>'
               f'<line x1="{left}" x2="{left}" y1="{top}" y2="{plot_bottom}" stroke="#333"/>'
               f'<text x="{(left + plot_right) / 2:.0f}" y="{height - 8}" text-anchor="middle" font-size="12">{x_label}</text>'
               f'<text x="14" y="{middle_y:.0f}" text-anchor="middle" font-size="12" '
               f'transform="rotate(-90 14 {middle_y:.0f})">volume (mL)</text>')
    for phase, frame in (("ED", results.get("ed_frame")), ("ES", results.get("es_frame"))):
        if frame is not None and 0 <= frame < n:
            x = x_of(xs[frame])
            svg.append(f'<line class="phase" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{plot_bottom}" stroke="#555" '
                       f'stroke-dasharray="4 3"/><text x="{x + 3:.1f}" y="{top + 10}" font-size="11">{phase}</text>')
    for i, (name, values) in enumerate(curves):
        colour = _css(STRUCTURES[f"{name}_blood_pool"].color)
        points = [(x_of(x), y_of(v)) for x, v in zip(xs, values) if v is not None]  # None: no label in that frame
        coordinates = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        svg.append(f'<polyline class="volume" data-curve="{name}" points="{coordinates}" fill="none" stroke="{colour}" '
                   'stroke-width="2.5"/>')
        svg += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}" stroke="#333" stroke-width="0.5"/>' for x, y in points]
        y = top + 10 + 18 * i
        svg.append(f'<line x1="{plot_right + 12}" x2="{plot_right + 34}" y1="{y}" y2="{y}" stroke="{colour}" stroke-width="3"/>'
                   f'<text x="{plot_right + 40}" y="{y + 4}" font-size="12">{name.upper()}</text>')
    svg.append("</svg>")
    return ("<figure>" + "".join(svg)
            + "<figcaption>Blood-pool volume over the cardiac cycle (dashed: ED and ES).</figcaption></figure>")


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round-numbered ticks from lo to hi."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _bullseye_figure(part: PartResult, name: str, unit: str, title: str, field_strength_t: float | None = None) -> str:
    """The part's per-segment values of ``name`` on the measurement's fixed colour scale
    (measurements.bullseye.fixed_scale), stated under the plot."""
    values = {m.segment: m.value for m in part.measurements if m.name == name and m.segment is not None}
    if not values:
        return f'<p class="meta">{_e(title)}: no segment values.</p>'
    scale = fixed_scale(name, field_strength_t)
    low, high = value_range(values, scale)
    how = "fixed" if scale else "this study's range"
    caption = f"{title}; colour scale {_number(low, unit)}-{_number(high, unit)} {_unit(unit)} ({how})"
    return f"<figure>{bullseye_svg(values, unit, name, scale)}<figcaption>{_e(caption)}</figcaption></figure>"


def bullseye_svg(values: dict[int, float], unit: str, name: str, scale: tuple[float, float] | None = None) -> str:
    """AHA 16-segment bull's-eye: each segment coloured by its value with the value written in it; grey without one.

    ``scale`` (low, high) fixes the colour scale; by default it spans the values.
    """
    values = finite_values(values)
    low, high = value_range(values, scale)
    cx, cy, digits = 130, 125, DIGITS.get(unit, 1)
    svg = [f'<svg class="bullseye" data-plot="{_e(name)}" xmlns="http://www.w3.org/2000/svg" width="260" height="300" '
           f'viewBox="0 0 260 300" role="img" aria-label="AHA 16-segment plot of {_e(name)}">']
    for segment, (inner, outer, centre, span) in SEGMENT_PLACES.items():
        value = values.get(segment)
        fill = colour_of(value, low, high)
        label = "–" if value is None else _number(value, unit)
        tooltip = f"AHA {segment} {AHA_SEGMENT_NAMES[segment]}: " + ("no data" if value is None else f"{label} {_unit(unit)}")
        svg.append(f'<path class="aha-segment" data-segment="{segment}" d="{_sector(cx, cy, inner, outer, centre, span)}" '
                   f'fill="{_css(fill)}" stroke="#fff" stroke-width="1.5"><title>{_e(tooltip)}</title></path>')
        r = (inner + outer) / 2 if inner else 24
        x, y = cx + r * math.cos(math.radians(centre)), cy - r * math.sin(math.radians(centre))
        dark = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2] < 140  # white text on dark segments
        svg.append(f'<text x="{x:.1f}" y="{y + 4:.1f}" text-anchor="middle" font-size="11" '
                   f'fill="{"#fff" if dark else "#111"}">{label}</text>')
    for text, x, y, anchor in (("Anterior", cx, 16, "middle"), ("Inferior", cx, 242, "middle"),
                               ("Septal", 1, cy + 4, "start"), ("Lateral", 259, cy + 4, "end")):
        svg.append(f'<text x="{x}" y="{y}" text-anchor="{anchor}" font-size="9" fill="#555">{text}</text>')
    gradient = f"scale-{_e(name)}"
    stops = "".join(f'<stop offset="{i / (len(COLOUR_STOPS) - 1):.2f}" stop-color="{_css(c)}"/>'
                    for i, c in enumerate(COLOUR_STOPS))
    svg.append(f'<defs><linearGradient id="{gradient}">{stops}</linearGradient></defs>'
               f'<rect x="30" y="256" width="150" height="10" fill="url(#{gradient})" stroke="#999"/>'
               f'<text x="30" y="280" font-size="10">{low:.{digits}f}</text>'
               f'<text x="180" y="280" font-size="10" text-anchor="end">{high:.{digits}f} {_e(_unit(unit))}</text>'
               f'<rect x="200" y="256" width="10" height="10" fill="{_css(NO_DATA)}" stroke="#999"/>'
               '<text x="214" y="265" font-size="9">no data</text></svg>')
    return "".join(svg)


def _sector(cx: float, cy: float, inner: float, outer: float, centre: float, span: float) -> str:
    """SVG path of a ring sector (a pie wedge when ``inner`` is 0); SVG's y axis points down."""
    a0, a1 = math.radians(centre - span / 2), math.radians(centre + span / 2)

    def at(r, a):
        return f"{cx + r * math.cos(a):.2f} {cy - r * math.sin(a):.2f}"

    # Outer arc counter-clockwise on screen (sweep flag 0), inner arc back clockwise (sweep flag 1).
    if inner == 0:
        return f"M {cx} {cy} L {at(outer, a0)} A {outer} {outer} 0 0 0 {at(outer, a1)} Z"
    return (f"M {at(outer, a0)} A {outer} {outer} 0 0 0 {at(outer, a1)} "
            f"L {at(inner, a1)} A {inner} {inner} 0 0 1 {at(inner, a0)} Z")


def _probability_bars_svg(probabilities: dict[str, float], labels: dict[str, str], chosen: str | None) -> str:
    """Horizontal bars of class probabilities; the model's class darker."""
    row, label_width, bar_width = 22, 240, 200
    width, height = label_width + bar_width + 60, row * len(probabilities) + 8
    svg = [f'<svg class="bars" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="class probabilities">']
    for i, (name, p) in enumerate(probabilities.items()):
        y, length = 4 + i * row, max(float(p), 0.0) * bar_width
        colour = "#2b5c8a" if name == chosen else "#9bb3c9"
        svg.append(f'<text x="{label_width - 6}" y="{y + 15}" text-anchor="end" font-size="12">'
                   f'{_e(labels.get(name, name))}</text>'
                   f'<rect x="{label_width}" y="{y + 3}" width="{length:.1f}" height="{row - 6}" fill="{colour}"/>'
                   f'<text x="{label_width + length + 4:.1f}" y="{y + 15}" font-size="11">{float(p):.2f}</text>')
    return "<figure>" + "".join(svg) + "</svg></figure>"
