"""``report.html``: one self-contained page of an analysis that a clinician can read offline.

Everything is inline, so the file can be mailed, archived or opened without a network:
charts are SVG, images are PNG in ``data:`` URIs (written by the small encoder below,
so no plotting library is needed), styling is a short CSS block, and there is no
script at all. All text that comes from the study (DICOM headers, and reasons or flags
that quote them) is HTML-escaped.

What it shows, in reading order: patient and study facts, software and weights, a
research-use banner; the quality flags (errors and warnings first, information folded
away); each part of the analysis (function table and volume curves, short-axis images
at ED and ES with the RV insertion points, AHA bull's-eye plots, disease and LGE
probabilities, atria, LGE and map images) or, for a part that did not run, why; and
every series read with what it was used for.

Deliberately left out: normal ranges. None are validated for this software, and an
invented range would read as a validated one. Images are shown as stored (rows down,
columns right), cropped to the heart, never flipped or rotated.

A section that cannot be drawn (an unexpected result) says why instead, so that every
analysis that completed gets its report.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import os
import struct
import zlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import __version__
from ..measurements.aha import AHA_SEGMENT_NAMES, slice_levels
from ..measurements.volumes import mosteller_bsa_m2
from ..terminology import STRUCTURES
from .results import OK, LabelMap, PartResult, StudyAnalysis
from .select import ROLES

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"

# The encoder of the carried CPU weight set; models/vit.py keeps it for tests and
# CPU-sized experiments (the method's encoder is vit_small).
CPU_SIZED_ENCODERS = ("vit_nano",)

# ACDC's groups, the classes of the disease model (tasks.DISEASES).
DISEASE_NAMES = {"NOR": "normal", "DCM": "dilated cardiomyopathy", "HCM": "hypertrophic cardiomyopathy",
                 "MINF": "previous myocardial infarction", "RV": "abnormal right ventricle"}

# Decimals shown per unit, and how a unit is written for readers.
DIGITS = {"ml": 1, "ml/m2": 1, "%": 1, "g": 1, "g/m2": 1, "m2": 2, "mm": 1, "cm2": 1, "ms": 0}
UNIT_TEXT = {"ml": "mL", "ml/m2": "mL/m²", "g/m2": "g/m²", "m2": "m²", "cm2": "cm²"}

FILLED = ("enhanced_myocardium",)  # drawn filled as well as outlined: the area is the finding
CROP_MARGIN_MM = 25.0  # around everything segmented in a stack
TARGET_IMAGE_PX = 300  # small crops are enlarged by a whole factor (at most 4) to reach this size
NO_DATA = (200, 200, 200)  # bull's-eye segments without a value
COLOUR_STOPS = ((255, 255, 204), (253, 141, 60), (189, 0, 38))  # bull's-eye scale: light yellow, orange, dark red


class Html(str):
    """Text that is HTML already, so ``_cell`` does not escape it again."""


def write_html_report(analysis: StudyAnalysis, out_dir: str | os.PathLike) -> Path:
    """Write ``out_dir/report.html`` for ``analysis``; returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / REPORT_FILE
    path.write_text(render_report(analysis), encoding="utf-8")
    return path


def render_report(analysis: StudyAnalysis) -> str:
    """The whole page as text."""
    body = [_safe(_header, analysis), _safe(_parts_overview, analysis), _safe(_flags_section, analysis)]
    body += [_safe(_part_section, analysis, part) for part in analysis.parts.values()]
    body += [_safe(_series_section, analysis), _footer()]
    title = f"CMR analysis {analysis.study_facts().get('patient_id') or ''}".strip()
    return ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


# --- header, overview, flags ----------------------------------------------------------------


def _header(analysis: StudyAnalysis) -> str:
    facts = analysis.study_facts()
    info = analysis.series[0].stack.info if analysis.series else None
    sex = facts.get("patient_sex") or ""
    field = f"{facts['field_strength_t']:g} T" if facts.get("field_strength_t") else ""
    rows = [
        ["Patient name", (info.patient_name.replace("^", " ").strip() if info else "") or "—"],
        ["Patient ID", facts.get("patient_id") or "—"],
        ["Sex", {"M": "male", "F": "female", "O": "other"}.get(sex, sex or "—")],
        ["Age", _age(facts.get("patient_age"))],
        ["Height", f"{facts['height_m'] * 100:.0f} cm" if facts.get("height_m") else "—"],
        ["Weight", f"{facts['weight_kg']:.1f} kg" if facts.get("weight_kg") else "—"],
        ["Body surface area", _bsa(analysis, facts)],
        ["Study date", _date(facts.get("study_date"))],
        ["Study", facts.get("study_description") or "—"],
        ["Heart rate", _heart_rate(analysis, facts)],
        ["Scanner", " ".join(filter(None, [facts.get("manufacturer"), field])) or "—"],
    ]
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return ("<header>\n<h1>Cardiac MR analysis</h1>\n"
            '<div class="banner"><p>Research software, not for clinical use: these results are not validated for '
            "diagnosis or treatment. Check every image and number.</p>"
            f"<p>{_e(_weights_sentence(analysis))}</p></div>\n"
            + _table(None, rows, css="facts") +
            f'\n<p class="meta">CMRFoundation {_e(__version__)}; analysis run {_e(analysis.created)}; '
            f"report written {_e(now)}; source {_e(analysis.source)}.</p>\n{_weights_line(analysis)}\n</header>")


def _weights_sentence(analysis: StudyAnalysis) -> str:
    """What the weight manifests say about the weights used; only manifests whose files match the analysis count."""
    weights = analysis.weights or {}
    tasks = weights.get("tasks") or {}
    if not tasks:
        return "No model weights were used in this analysis."
    encoders, unread = set(), []
    for task, files in tasks.items():
        manifest = _manifest(weights.get("folder"), task)
        used = sorted(str(f.get("sha256")) for f in files or [])
        if manifest is None or sorted(str(f.get("sha256")) for f in manifest.get("files") or []) != used:
            unread.append(task)
            continue
        encoder = (manifest.get("architecture") or {}).get("encoder") or {}
        encoders.add(str(encoder.get("name") or "unnamed"))
    text = ""
    small = sorted(encoders & set(CPU_SIZED_ENCODERS))
    if small:
        text = (f"The models in use are the small CPU-trained weight set ({', '.join(small)} encoder, per their "
                "manifests): they run every step but are well below the accuracy of the published method.")
    elif encoders:
        text = f"Models in use: {', '.join(sorted(encoders))} encoder (per their manifests)."
    if unread:
        text += (f" The manifests of {', '.join(sorted(unread))} could not be read or no longer match the weights "
                 "used, so those weights are not described here.")
    return text.strip()


def _manifest(folder, task: str) -> dict | None:
    if not folder:
        return None
    try:
        manifest = json.loads((Path(folder) / f"{task}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _weights_line(analysis: StudyAnalysis) -> str:
    """Every weight file used, by task, with its SHA-256 shortened (the full ones are in analysis.json)."""
    weights = analysis.weights or {}
    files = [f"{task} {str(entry.get('sha256') or '?')[:12]}"
             for task, entries in sorted((weights.get("tasks") or {}).items()) for entry in entries or []]
    missing = [f"{task} ({reason})" for task, reason in sorted((weights.get("unavailable") or {}).items())]
    folder = weights.get("folder") or weights.get("folder_error") or "—"
    text = f"Weights folder {folder}, device {weights.get('device') or '—'}."
    if files:
        text += f" Weights used (task, SHA-256 first 12 characters): {' · '.join(files)}."
    if missing:
        text += f" Not available: {'; '.join(missing)}."
    return f'<p class="meta">{_e(text)}</p>'


def _parts_overview(analysis: StudyAnalysis) -> str:
    if not analysis.parts:
        return '<section><h2>Parts of the analysis</h2><p class="not-done">No part of the analysis ran.</p></section>'
    rows = [[Html(f'<a href="#part-{_e(part.name)}">{_e(part.title)}</a>'),
             f"{part.series} {_description(analysis, part.series)}" if part.series else "—",
             Html(f'<span class="status-{_e(part.status)}">{_e(part.status)}</span>'), part.reason or ""]
            for part in analysis.parts.values()]
    return f"<section><h2>Parts of the analysis</h2>{_table(['Part', 'Series', 'Status', 'Reason'], rows)}</section>"


def _flags_section(analysis: StudyAnalysis) -> str:
    def item(flag) -> str:
        where = ", ".join(filter(None, [f"series {flag.series}" if flag.series else None, flag.part]))
        return (f'<li class="flag-{_e(flag.severity)}"><strong>{_e(flag.severity)}</strong>: {_e(flag.message)}'
                + (f' <span class="meta">({_e(where)})</span>' if where else "") + "</li>")

    order = {"error": 0, "warning": 1}
    shown = sorted((f for f in analysis.flags if f.severity in order), key=lambda f: order[f.severity])
    info = [f for f in analysis.flags if f.severity not in order]
    text = '<section id="flags"><h2>Quality flags</h2>'
    text += f'<ul class="flags">{"".join(map(item, shown))}</ul>' if shown else "<p>No errors or warnings.</p>"
    if info:
        text += (f"<details><summary>{len(info)} information flag(s)</summary>"
                 f'<ul class="flags">{"".join(map(item, info))}</ul></details>')
    return text + "</section>"


# --- parts ----------------------------------------------------------------------------------


def _part_section(analysis: StudyAnalysis, part: PartResult) -> str:
    series = f" · series {part.series} {_description(analysis, part.series)}" if part.series else ""
    text = f'<section id="part-{_e(part.name)}"><h2>{_e(part.title)}<span class="meta">{_e(series)}</span></h2>'
    if part.status != OK:
        reason = part.reason or "no reason given"
        text += f'<p class="not-done"><strong>{_e(part.status.capitalize())}</strong>: {_e(reason)}</p>'
    else:
        render = PART_RENDERERS.get(part.name, _measurement_list)
        text += _safe(render, analysis, part)
    if part.notes:
        text += '<ul class="notes">' + "".join(f"<li>{_e(note)}</li>" for note in part.notes) + "</ul>"
    return text + "</section>"


def _function(analysis: StudyAnalysis, part: PartResult) -> str:
    """The LV/RV table from the part's measurements (as in measurements.csv), the volume curves and the images."""
    value = {m.name: m.value for m in part.measurements if m.segment is None}.get
    rows = [[label, _number(value(f"lv_{name}"), unit), _number(value(f"rv_{name}"), unit), _unit(unit)]
            for label, name, unit in (("End-diastolic volume (EDV)", "edv", "ml"), ("End-systolic volume (ESV)", "esv", "ml"),
                                      ("Stroke volume (SV)", "sv", "ml"), ("Ejection fraction (EF)", "ef", "%"),
                                      ("EDV indexed to BSA", "edv_index", "ml/m2"),
                                      ("ESV indexed to BSA", "esv_index", "ml/m2"),
                                      ("SV indexed to BSA", "sv_index", "ml/m2"))]
    rows += [["Myocardial mass", _number(value("lv_mass"), "g"), "—", "g"],
             ["Myocardial mass indexed to BSA", _number(value("lv_mass_index"), "g/m2"), "—", _unit("g/m2")]]
    results, stack = part.results, analysis.stack(part.series)
    es = results.get("es_frame")
    phases = (f"ED at frame {results.get('ed_frame')}, ES at frame {'—' if es is None else es} "
              f"(of {stack.n_frames}, counted from 0).")
    return (_table(["", "LV", "RV", "Unit"], rows, numeric=(1, 2)) + f"<p>{_e(phases)}</p>"
            + _safe(_volume_curves_svg, results, stack) + _safe(_sax_images, analysis, part))


def _sax_images(analysis: StudyAnalysis, part: PartResult) -> str:
    """Basal, mid and apical short-axis slices at ED and ES, with the RV insertion points at ED."""
    stack, label_map = analysis.stack(part.series), _structure_map(part)
    if label_map is None:
        return ""
    ed, es = part.results["ed_frame"], part.results.get("es_frame")
    myocardium = _labels_at(label_map, ed) == label_map.label_names.index("lv_myocardium")
    points = _insertion_points(analysis, part)
    crop = _crop_box(label_map.labels, stack.spacing)
    figures = []
    for level, k in _level_slices(myocardium, part.results.get("basal_end")):
        for phase, frame in (("ED", ed), ("ES", es)):
            if frame is not None:
                marks = points.get(k, []) if frame == ed else []
                rgb = _overlay(stack.pixels[k, frame], _labels_at(label_map, frame)[k], label_map.label_names,
                               crop, stack.spacing, marks)
                figures.append(_figure(rgb, f"{level}, {phase} (slice {k}, frame {frame})"))
    marked = ("anterior_rv_insertion", "inferior_rv_insertion") if points else ()
    return _figures(figures, _legend(label_map.label_names, marked))


def _insertion_points(analysis: StudyAnalysis, function: PartResult) -> dict[int, list]:
    """slice -> [(row, col, colour)]: the RV insertion points found at ED on the function part's series."""
    segments = analysis.parts.get("myocardial_segments")
    if (segments is None or segments.status != OK or segments.series != function.series
            or segments.results.get("frame") != function.results.get("ed_frame")):
        return {}
    found: dict[int, list] = {}
    for entry in segments.results.get("insertion_points") or []:
        for side in ("anterior", "inferior"):
            if entry.get(side):
                row, col = entry[side]["row_col"]
                found.setdefault(int(entry["slice"]), []).append((row, col, STRUCTURES[f"{side}_rv_insertion"].color))
    return found


def _myocardial_segments(analysis: StudyAnalysis, part: PartResult) -> str:
    results = part.results
    return (_bullseye_figure(part, "wall_thickness", "mm", f"End-diastolic wall thickness (frame {results.get('frame')})")
            + f"<p>Base at the {_e(results.get('basal_end'))} slice end of the stack. The RV insertion points that "
            "place the segments are marked on the end-diastolic images of the ventricular function section.</p>")


def _disease(analysis: StudyAnalysis, part: PartResult) -> str:
    results = part.results
    probabilities, chosen = results.get("probabilities") or {}, results.get("class")
    labels = {name: f"{name} ({DISEASE_NAMES[name]})" if name in DISEASE_NAMES else name for name in probabilities}
    level_names = {"basal_slice": "basal slice", "mid_slice": "mid slice", "apical_slice": "apical slice",
                   "ed_frame": "ED frame", "es_frame": "ES frame"}
    used = ", ".join(f"{level_names.get(k, k)} {v}" for k, v in (results.get("levels") or {}).items() if v is not None)
    method = results.get("method", "image model")
    basis = {"phenotypes": "from the measured phenotypes (EF, RV/LV volumes, mass-to-volume, wall thickness "
                           "and its regional spread)",
             "phenotypes + image model": "from the measured phenotypes and the image model together",
             "image model": "from the image model"}.get(method, method)
    phenotypes = results.get("phenotypes") or {}
    shown = ", ".join(f"{_e(name.replace('_', ' '))} {_number(value, '', 2)}" for name, value in phenotypes.items()
                      if value is not None)
    return (f"<p>Class: <strong>{_e(labels.get(chosen, chosen))}</strong> "
            f"(p = {_number(probabilities.get(chosen), '', 2)}), {_e(basis)}.</p>"
            + _probability_bars_svg(probabilities, labels, chosen)
            + (f'<p class="meta">Phenotypes: {shown}.</p>' if shown else "")
            + (f'<p class="meta">Images used: {_e(used)}.</p>' if used else ""))


def _atria(analysis: StudyAnalysis, part: PartResult) -> str:
    results = part.results
    rows = []
    for side, name in (("la", "Left atrium"), ("ra", "Right atrium")):
        atrium = results.get(side) or {}
        largest = atrium.get("max") or {}
        rows.append([name, atrium.get("max_frame", "—"), _number(largest.get("area_cm2"), "cm2"),
                     _number(largest.get("length_mm"), "mm"), _number(largest.get("volume_ml"), "ml")])
    text = _table(["At its largest", "Frame", "Area (cm²)", "Length (mm)", "Volume, area-length (mL)"], rows,
                  numeric=(1, 2, 3, 4))
    stack, label_map = analysis.stack(part.series), _structure_map(part)
    if label_map is None:
        return text
    k, crop = int(results.get("slice", 0)), _crop_box(label_map.labels, stack.spacing)
    figures = [_figure(_overlay(stack.pixels[k, frame], _labels_at(label_map, frame)[k], label_map.label_names, crop,
                                stack.spacing), f"4-chamber, {phase} (slice {k}, frame {frame})")
               for phase, frame in (("LV end-diastole", results.get("ed_frame")), ("LV end-systole", results.get("es_frame")))
               if frame is not None]
    return text + _figures(figures, _legend(label_map.label_names))


def _lge_extent(analysis: StudyAnalysis, part: PartResult) -> str:
    extent = part.results.get("extent") or {}
    remote = (f"AHA segment {extent.get('remote_segment', '—')} (mean {_number(extent.get('remote_mean'), '', 0)}, "
              f"SD {_number(extent.get('remote_sd'), '', 0)})")
    rows = [["Enhanced myocardium", f"{_number(extent.get('enhanced_percent'), '%')} % of the LV myocardium"],
            ["Enhanced volume", f"{_number(extent.get('enhanced_ml'), 'ml')} mL"],
            ["LV myocardium", f"{_number(extent.get('myocardium_ml'), 'ml')} mL"],
            ["Method", f"{extent.get('method', '—')}; remote: {remote}; threshold {_number(extent.get('threshold'), '', 0)}"],
            ["Present by extent", f"{'yes' if extent.get('lge_present') else 'no'} "
                                  f"(cut-off {_number(extent.get('presence_cutoff_percent'), '%')} %)"]]
    aha = part.results.get("aha") or {}
    return (_table(None, rows)
            + _bullseye_figure(part, "lge_extent", "%", "Enhanced myocardium per segment (% of the segment)", (0.0, 100.0))
            + _safe(_single_frame_images, analysis, part, "LGE", aha.get("basal_end")))


def _lge_presence(analysis: StudyAnalysis, part: PartResult) -> str:
    probabilities, chosen = part.results.get("probabilities") or {}, part.results.get("class")
    return (f"<p>Model's answer: LGE <strong>{_e(chosen)}</strong> (p = {_number(probabilities.get(chosen), '', 2)}).</p>"
            + _probability_bars_svg(probabilities, {name: name for name in probabilities}, chosen))


def _map(analysis: StudyAnalysis, part: PartResult) -> str:
    results = part.results
    quantity, unit = str(results.get("quantity", part.name)), str(results.get("unit", "ms"))
    overall = (results.get("values") or {}).get("global") or {}
    row = [f"{quantity.upper()} ({unit})", *(_number(overall.get(key), unit) for key in ("mean", "median", "sd")),
           overall.get("pixels", "—")]
    aha = results.get("aha") or {}
    return (_table(["LV myocardium, global", "Mean", "Median", "SD", "Pixels"], [row], numeric=(1, 2, 3, 4))
            + _bullseye_figure(part, quantity, unit, f"{quantity.upper()} per segment, mean ({unit})")
            + _safe(_single_frame_images, analysis, part, f"{quantity.upper()} map", aha.get("basal_end")))


def _single_frame_images(analysis: StudyAnalysis, part: PartResult, what: str, basal_end: str | None) -> str:
    """Basal, mid and apical slices of a one-frame short-axis stack (LGE, maps) with their segmentation."""
    stack, label_map = analysis.stack(part.series), _structure_map(part)
    if label_map is None:
        return ""
    labels = _labels_at(label_map, 0)
    myocardium = labels == label_map.label_names.index("lv_myocardium")
    crop = _crop_box(label_map.labels, stack.spacing)
    figures = [_figure(_overlay(stack.pixels[k, 0], labels[k], label_map.label_names, crop, stack.spacing),
                       f"{what}, {level} (slice {k})") for level, k in _level_slices(myocardium, basal_end)]
    return _figures(figures, _legend(label_map.label_names))


def _measurement_list(analysis: StudyAnalysis, part: PartResult) -> str:
    """A part without a layout of its own: its measurements as a list."""
    items = "".join(f"<li>{_e(m.name)} {_e(m.segment_label)}: {_number(m.value, m.unit)} {_e(_unit(m.unit))}</li>"
                    for m in part.measurements)
    return f"<ul>{items}</ul>" if items else "<p>No measurements.</p>"


PART_RENDERERS = {"function": _function, "myocardial_segments": _myocardial_segments, "disease": _disease,
                  "atria": _atria, "lge_extent": _lge_extent, "lge_presence": _lge_presence, "t1_map": _map, "t2_map": _map}


# --- series ---------------------------------------------------------------------------------


def _series_section(analysis: StudyAnalysis) -> str:
    rows = []
    for record in analysis.series:
        stack, c = record.stack, record.classification
        predicted, header = "not classified", "—"
        if c is not None:
            predicted = (c.image_type or "unknown") + _probability(c.image_type_confidence)
            if c.view is not None:
                predicted += f", view {c.view}{_probability(c.view_confidence)}"
            predicted += f"; from {c.image_type_source}"
            header = ", ".join(filter(None, [c.header.image_type, c.header.view])) or "—"
        size = f"{stack.n_slices} × {stack.n_frames}, {stack.orientation}"
        rows.append([record.key, stack.info.series_description or "—", size, predicted, header,
                     _series_use(analysis, record.key)])
    head = ["Series", "Description", "Slices × frames", "Predicted (model)", "Header suggests", "Use"]
    return f'<section id="series"><h2>Series</h2>{_table(head, rows, css="series")}</section>'


def _series_use(analysis: StudyAnalysis, key: str) -> str:
    """What the series was used for, or why it was not."""
    used = [s for s in analysis.selection.values() if s.series == key]
    if used:
        parts = ", ".join(p.title for p in analysis.parts.values() if p.series == key)
        return "; ".join(f"Used as {s.title}" + (f" for {parts}" if parts else "") + f": {s.reason}" for s in used)
    why_not = [f"as {s.title}: {a['why_not']}" for s in analysis.selection.values() for a in s.alternatives if a["series"] == key]
    if why_not:
        return "Not used " + "; ".join(why_not)
    c = analysis.record(key).classification
    if c is None or c.image_type is None:
        return "Not used: not classified"
    for role in ROLES:
        chosen = analysis.selection.get(role.name)
        if chosen is not None and chosen.series and c.image_type == role.image_type and role.view in (None, c.view):
            return f"Not used: series {chosen.series} is the {role.title} used"
    return f"Not used: no part reads {c.image_type} images" + (f" of the {c.view} view" if c.view else "")


# --- charts (SVG) ---------------------------------------------------------------------------


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
        xs, x_label = [float(i) for i in range(n)], "frame"
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


# AHA 16-segment layout, as it is usually drawn: anterior at the top, septum on the left.
# segment -> (inner radius, outer radius, centre angle in degrees counter-clockwise from 3 o'clock, angular width)
SEGMENT_PLACES = {
    **{1 + i: (70, 100, 90 + 60 * i, 60) for i in range(6)},  # basal
    **{7 + i: (40, 70, 90 + 60 * i, 60) for i in range(6)},  # mid
    **{13 + i: (0, 40, 90 + 90 * i, 90) for i in range(4)},  # apical
}


def _bullseye_figure(part: PartResult, name: str, unit: str, title: str, scale=None) -> str:
    values = {m.segment: m.value for m in part.measurements if m.name == name and m.segment is not None}
    if not values:
        return f'<p class="meta">{_e(title)}: no segment values.</p>'
    return f"<figure>{bullseye_svg(values, unit, name, scale)}<figcaption>{_e(title)}</figcaption></figure>"


def bullseye_svg(values: dict[int, float], unit: str, name: str, scale: tuple[float, float] | None = None) -> str:
    """AHA 16-segment bull's-eye: each segment coloured by its value with the value written in it; grey without one.

    ``scale`` (low, high) fixes the colour scale; by default it spans the values.
    """
    values = {k: v for k, v in values.items() if v is not None and math.isfinite(v)}
    low, high = scale or (min(values.values(), default=0.0), max(values.values(), default=1.0))
    if high <= low:
        low, high = low - 1, high + 1
    cx, cy, digits = 130, 125, DIGITS.get(unit, 1)
    svg = [f'<svg class="bullseye" data-plot="{_e(name)}" xmlns="http://www.w3.org/2000/svg" width="260" height="300" '
           f'viewBox="0 0 260 300" role="img" aria-label="AHA 16-segment plot of {_e(name)}">']
    for segment, (inner, outer, centre, span) in SEGMENT_PLACES.items():
        value = values.get(segment)
        fill = NO_DATA if value is None else _colour_at((value - low) / (high - low))
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


def _colour_at(t: float) -> tuple[int, int, int]:
    """The scale's colour at ``t`` (0..1, clipped)."""
    t = min(max(t, 0.0), 1.0) * (len(COLOUR_STOPS) - 1)
    i = min(int(t), len(COLOUR_STOPS) - 2)
    a, b = COLOUR_STOPS[i], COLOUR_STOPS[i + 1]
    return tuple(int(round(a[c] + (b[c] - a[c]) * (t - i))) for c in range(3))


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


# --- images (PNG) ---------------------------------------------------------------------------


def _structure_map(part: PartResult) -> LabelMap | None:
    """The part's segmentation of named structures (not its AHA segment map)."""
    return next((m for m in part.label_maps if any(name in STRUCTURES for name in m.label_names[1:])), None)


def _labels_at(label_map: LabelMap, frame: int) -> np.ndarray:
    """The label map's [slices, rows, cols] at stack ``frame``."""
    index = frame if label_map.frames is None else label_map.frames.index(frame)
    return label_map.labels[:, index]


def _level_slices(myocardium: np.ndarray, basal_end: str | None) -> list[tuple[str, int]]:
    """(name, slice): the middle slice of the basal, mid and apical thirds of the LV (``[slices, rows, cols]`` mask)."""
    if not myocardium.any():
        return [("Middle slice", myocardium.shape[0] // 2)]
    if basal_end in ("first", "last"):
        names = {"basal": "Basal", "mid": "Mid-ventricular", "apical": "Apical"}
    else:  # base and apex were not told apart: thirds in stack order
        basal_end, names = "first", {"basal": "First third", "mid": "Middle third", "apical": "Last third"}
    levels = slice_levels(myocardium, basal_end)
    picked = []
    for level in ("basal", "mid", "apical"):
        slices = [k for k, found in enumerate(levels) if found == level]
        if slices:
            picked.append((names[level], slices[len(slices) // 2]))
    return picked


def _crop_box(labels: np.ndarray, spacing) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1) around everything segmented in any slice or frame, with a margin."""
    rows, cols = labels.shape[-2:]
    seen = np.any(labels > 0, axis=tuple(range(labels.ndim - 2)))
    if not seen.any():
        return 0, rows, 0, cols
    r, c = np.flatnonzero(seen.any(axis=1)), np.flatnonzero(seen.any(axis=0))
    dr, dc = int(CROP_MARGIN_MM / spacing[1]), int(CROP_MARGIN_MM / spacing[0])  # spacing: (column, row, slice)
    return max(0, r[0] - dr), min(rows, r[-1] + 1 + dr), max(0, c[0] - dc), min(cols, c[-1] + 1 + dc)


def _overlay(image: np.ndarray, labels: np.ndarray, label_names, crop, spacing, points=()) -> np.ndarray:
    """RGB uint8 of a cropped, enlarged slice, each structure outlined (FILLED ones also filled) in its colour.

    ``points``: (row, col, colour) marks in the slice's pixel coordinates.
    """
    r0, r1, c0, c1 = crop
    image, labels = np.nan_to_num(np.asarray(image, dtype=float)[r0:r1, c0:c1]), labels[r0:r1, c0:c1]
    low, high = np.percentile(image, [1, 99.5])
    grey = np.clip((image - low) / (high - low if high > low else 1.0), 0, 1) * 255
    # Whole-pixel enlargement; non-square pixels get more repeats along their longer side.
    scale = int(np.clip(math.ceil(TARGET_IMAGE_PX / max(image.shape)), 1, 4))
    col_mm, row_mm = float(spacing[0]), float(spacing[1])
    fr = max(1, round(scale * row_mm / min(row_mm, col_mm)))
    fc = max(1, round(scale * col_mm / min(row_mm, col_mm)))
    grey, labels = _enlarge(grey, fr, fc), _enlarge(labels, fr, fc)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    for value, name in enumerate(label_names):
        mask = labels == value
        if value == 0 or name not in STRUCTURES or not mask.any():
            continue
        colour = np.array(STRUCTURES[name].color, dtype=float)
        if name in FILLED:
            rgb[mask] = 0.4 * rgb[mask] + 0.6 * colour
        inside = mask
        for _ in range(min(2, scale)):  # an outline 1-2 pixels wide
            inside = _erode(inside)
        rgb[mask & ~inside] = colour
    rows, cols = np.ogrid[:rgb.shape[0], :rgb.shape[1]]
    for row, col, colour in points:
        distance = np.hypot(rows - ((row - r0 + 0.5) * fr - 0.5), cols - ((col - c0 + 0.5) * fc - 0.5))
        radius = 2.5 + scale
        rgb[distance <= radius + 1.2] = 0  # a dark rim, so the mark shows on bright blood too
        rgb[distance <= radius] = colour
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _enlarge(array: np.ndarray, fr: int, fc: int) -> np.ndarray:
    return np.repeat(np.repeat(array, fr, axis=0), fc, axis=1)


def _erode(mask: np.ndarray) -> np.ndarray:
    """4-neighbour erosion (at the image border the missing neighbours count as inside)."""
    inside = mask.copy()
    inside[1:] &= mask[:-1]
    inside[:-1] &= mask[1:]
    inside[:, 1:] &= mask[:, :-1]
    inside[:, :-1] &= mask[:, 1:]
    return inside


def png_bytes(rgb: np.ndarray) -> bytes:
    """A PNG (8-bit RGB, no filtering) of a ``[rows, cols, 3]`` uint8 array."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width = rgb.shape[:2]
    scanlines = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, width * 3)], axis=1)  # filter 0

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, RGB, deflate, no filter, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 6))
            + chunk(b"IEND", b""))


def _figure(rgb: np.ndarray, caption: str) -> str:
    data = base64.b64encode(png_bytes(rgb)).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" width="{rgb.shape[1]}" height="{rgb.shape[0]}" '
            f'alt="{_e(caption)}"><figcaption>{_e(caption)}</figcaption></figure>')


def _figures(figures: list[str], legend: str) -> str:
    return f'<div class="figures">{"".join(figures)}</div>{legend}' if figures else ""


def _legend(label_names, marks=()) -> str:
    names = [n for n in label_names[1:] if n in STRUCTURES] + list(marks)
    return '<p class="legend">' + "".join(
        f'<span class="swatch" style="background:{_css(STRUCTURES[n].color)}"></span>{_e(STRUCTURES[n].display_name)}'
        for n in names) + "</p>"


# --- small helpers --------------------------------------------------------------------------


def _safe(render, *args) -> str:
    """The section's HTML, or a note saying why it could not be drawn: one odd result must not cost the report."""
    try:
        return render(*args)
    except Exception as error:
        log.exception("report section not drawn")
        return f'<p class="not-done">This section could not be drawn: {_e(type(error).__name__)}: {_e(error)}</p>'


def _table(head: list[str] | None, rows: list[list], css: str = "values", numeric=()) -> str:
    """A table whose first column names the rows; cells are escaped unless they are Html."""
    text = f'<table class="{css}">'
    if head:
        text += "<tr>" + "".join(f"<th>{_e(cell)}</th>" for cell in head) + "</tr>"
    for row in rows:
        cells = [f"<th>{_cell(row[0])}</th>"]
        cells += [f'<td class="num">{_cell(c)}</td>' if i in numeric else f"<td>{_cell(c)}</td>"
                  for i, c in enumerate(row[1:], 1)]
        text += "<tr>" + "".join(cells) + "</tr>"
    return text + "</table>"


def _cell(value) -> str:
    return value if isinstance(value, Html) else _e(value)


def _e(value) -> str:
    return html.escape(str(value))


def _number(value, unit: str, digits: int | None = None) -> str:
    if value is None or not math.isfinite(float(value)):
        return "—"
    return f"{float(value):.{DIGITS.get(unit, 2) if digits is None else digits}f}"


def _probability(p: float | None) -> str:
    return "" if p is None else f" (p = {p:.2f})"


def _unit(unit: str) -> str:
    return UNIT_TEXT.get(unit, unit)


def _css(colour) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in colour))


def _description(analysis: StudyAnalysis, key: str) -> str:
    try:
        text = analysis.stack(key).info.series_description
    except StopIteration:  # not a series of this analysis
        return ""
    return f"'{text}'" if text else ""


def _age(text: str | None) -> str:
    """A DICOM age string (e.g. 034Y) in words."""
    units = {"D": "days", "W": "weeks", "M": "months", "Y": "years"}
    if text and len(text) == 4 and text[:3].isdigit() and text[3] in units:
        return f"{int(text[:3])} {units[text[3]]}"
    return text or "—"


def _date(text: str | None) -> str:
    if text and len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text or "—"


def _bsa(analysis: StudyAnalysis, facts: dict) -> str:
    """The BSA the volumes were indexed with, else Mosteller's from the header's height and weight."""
    value = analysis.value("bsa")
    if value is None and facts.get("height_m") and facts.get("weight_kg"):
        value = mosteller_bsa_m2(facts["height_m"] * 100, facts["weight_kg"])
    return "—" if value is None else f"{value:.2f} m² (Mosteller)"


def _heart_rate(analysis: StudyAnalysis, facts: dict) -> str:
    """From the short-axis cine's header when it has one (the rate during the cine), else the study's."""
    rate = facts.get("heart_rate_bpm")
    cine = analysis.selection.get("cine_sax")
    if cine is not None and cine.series is not None and analysis.stack(cine.series).info.heart_rate:
        rate = analysis.stack(cine.series).info.heart_rate
    return f"{rate:.0f} /min" if rate else "not in the header"


def _footer() -> str:
    return ("<footer><p>Images are shown as stored: rows top to bottom, columns left to right, cropped around the "
            "segmented structures; they are not flipped or rotated to a viewing convention. Slices and frames are "
            "counted from 0, as in analysis.json and the quality flags.</p>"
            "<p>No normal ranges are shown: none have been validated for this software. The numbers, label maps and "
            "flags of this report are also in analysis.json, measurements.csv and the label files beside it.</p></footer>")


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#222;line-height:1.4;
max-width:64em;margin:1.5em auto;padding:0 1em}
h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.25em;border-bottom:2px solid #ccc;padding-bottom:.15em;margin-top:1.6em}
h2 .meta{font-weight:normal;font-size:.75em;margin-left:.5em}
.banner{border:2px solid #b00000;background:#fff0f0;padding:.2em .9em;font-weight:600}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}table.facts th{background:#f5f5f5}
.meta{color:#555;font-size:.9em}
ul.flags{list-style:none;padding:0}ul.flags li{padding:.3em .6em;margin:.2em 0;border-left:5px solid #bbb;background:#f7f7f7}
ul.flags li.flag-error{background:#fde2e2;border-left-color:#c00}
ul.flags li.flag-warning{background:#fff4d6;border-left-color:#e0a000}
.status-ok{color:#176317}.status-skipped{color:#8a5a00;font-weight:600}.status-failed{color:#b00000;font-weight:600}
.not-done{background:#f3f3f3;border-left:5px solid #999;padding:.5em .8em}
.figures{display:flex;flex-wrap:wrap;gap:.8em}figure{margin:.4em 0;break-inside:avoid}figcaption{font-size:.85em;color:#444}
.legend .swatch{display:inline-block;width:.9em;height:.9em;border:1px solid #555;margin:0 .3em 0 .9em;vertical-align:middle}
footer{margin-top:2em;border-top:1px solid #ccc;font-size:.85em;color:#555}
@media print{body{max-width:none;margin:0;font-size:10pt}section{break-inside:avoid-page}
.banner,.flags li,.swatch{-webkit-print-color-adjust:exact;print-color-adjust:exact}}
"""
