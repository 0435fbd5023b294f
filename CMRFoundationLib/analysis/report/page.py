"""The report's page: header, overview, quality flags, one section per part of the analysis,
the series table and the footer, with their tables and layout (see the package docstring).

A section that cannot be drawn (an unexpected result) says why instead, so that every
analysis that completed gets its report.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path

from ... import __version__
from ...measurements.volumes import mosteller_bsa_m2
from ...terminology import STRUCTURES
from ..results import OK, PartResult, StudyAnalysis
from ..select import ROLES
from .charts import _bullseye_figure, _probability_bars_svg, _volume_curves_svg
from .images import (
    _crop_box,
    _figure,
    _figures,
    _labels_at,
    _legend,
    _level_slices,
    _overlay,
    _structure_map,
)
from .markup import Html, _checked, _e, _number, _numbered, _unit

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"

# The encoder of the carried CPU weight set; models/vit.py keeps it for tests and
# CPU-sized experiments (the method's encoder is vit_small).
CPU_SIZED_ENCODERS = ("vit_nano",)

# ACDC's groups, the classes of the disease model (tasks.DISEASES).
DISEASE_NAMES = {"NOR": "normal", "DCM": "dilated cardiomyopathy", "HCM": "hypertrophic cardiomyopathy",
                 "MINF": "previous myocardial infarction", "RV": "abnormal right ventricle"}


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
        text += _implausible_list(part)
        render = PART_RENDERERS.get(part.name, _measurement_list)
        text += _safe(render, analysis, part)
    if part.notes:
        text += '<ul class="notes">' + "".join(f"<li>{_e(note)}</li>" for note in part.notes) + "</ul>"
    return text + "</section>"


def _implausible_list(part: PartResult) -> str:
    """Above any layout, so that no section shows a flagged number without its reason: each
    reason once, with the values it concerns."""
    from ..parts import MEASUREMENTS

    concerned: dict[str, list[str]] = {}
    for m in part.measurements:
        if m.check:
            label = MEASUREMENTS[m.name].label if m.name in MEASUREMENTS else m.name
            concerned.setdefault(m.check, []).append(f"{label} {m.segment_label}".strip())
    if not concerned:
        return ""
    items = "".join(f"<li><strong>Not plausible</strong>: {_e(check)} ({_e(', '.join(labels))})</li>"
                    for check, labels in concerned.items())
    return f'<ul class="implausible">{items}</ul>'


def _function(analysis: StudyAnalysis, part: PartResult) -> str:
    """The LV/RV table from the part's measurements (as in measurements.csv), the volume curves and the images."""
    value = {m.name: m for m in part.measurements if m.segment is None}.get
    rows = [[label, _checked(value(f"lv_{name}"), unit), _checked(value(f"rv_{name}"), unit), _unit(unit)]
            for label, name, unit in (("End-diastolic volume (EDV)", "edv", "ml"), ("End-systolic volume (ESV)", "esv", "ml"),
                                      ("Stroke volume (SV)", "sv", "ml"), ("Ejection fraction (EF)", "ef", "%"),
                                      ("EDV indexed to BSA", "edv_index", "ml/m2"),
                                      ("ESV indexed to BSA", "esv_index", "ml/m2"),
                                      ("SV indexed to BSA", "sv_index", "ml/m2"))]
    rows += [["Myocardial mass", _checked(value("lv_mass"), "g"), "—", "g"],
             ["Myocardial mass indexed to BSA", _checked(value("lv_mass_index"), "g/m2"), "—", _unit("g/m2")]]
    results, stack = part.results, analysis.stack(part.series)
    phases = (f"End-diastole (ED) at frame {_numbered(results.get('ed_frame'))}, end-systole (ES) at frame "
              f"{_numbered(results.get('es_frame'))}, of frames 1 to {stack.n_frames}.")
    return (_table(["", "LV", "RV", "Unit"], rows, numeric=(1, 2)) + f'<p class="cycle">{_e(phases)}</p>'
            + _safe(_volume_curves_svg, results, stack) + _safe(_sax_images, analysis, part)
            + _safe(_slice_table, analysis, part))


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
                figures.append(_figure(rgb, f"{level}, {phase} (slice {_numbered(k)}, frame {_numbered(frame)})"))
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
    return (_bullseye_figure(part, "wall_thickness", "mm", f"End-diastolic wall thickness (frame {_numbered(results.get('frame'))})")
            + f"<p>Base at the {_e(results.get('basal_end'))} slice end of the stack. The RV insertion points that "
            "place the segments are marked on the end-diastolic images of the ventricular function section.</p>")


def _disease(analysis: StudyAnalysis, part: PartResult) -> str:
    results = part.results
    probabilities, chosen = results.get("probabilities") or {}, results.get("class")
    labels = {name: f"{name} ({DISEASE_NAMES[name]})" if name in DISEASE_NAMES else name for name in probabilities}
    level_names = {"basal_slice": "basal slice", "mid_slice": "mid slice", "apical_slice": "apical slice",
                   "ed_frame": "ED frame", "es_frame": "ES frame"}
    used = ", ".join(f"{level_names.get(k, k)} {_numbered(v)}" for k, v in (results.get("levels") or {}).items() if v is not None)
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
        rows.append([name, _numbered(atrium.get("max_frame")), _number(largest.get("area_cm2"), "cm2"),
                     _number(largest.get("length_mm"), "mm"), _number(largest.get("volume_ml"), "ml")])
    text = _table(["At its largest", "Frame", "Area (cm²)", "Length (mm)", "Volume, area-length (mL)"], rows,
                  numeric=(1, 2, 3, 4))
    stack, label_map = analysis.stack(part.series), _structure_map(part)
    if label_map is None:
        return text
    k, crop = int(results.get("slice", 0)), _crop_box(label_map.labels, stack.spacing)
    figures = [_figure(_overlay(stack.pixels[k, frame], _labels_at(label_map, frame)[k], label_map.label_names, crop,
                                stack.spacing), f"4-chamber, {phase} (slice {_numbered(k)}, frame {_numbered(frame)})")
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
            + _bullseye_figure(part, "lge_extent", "%", "Enhanced myocardium per segment (% of the segment)")
            + _safe(_single_frame_images, analysis, part, "LGE", aha.get("basal_end")) + _safe(_slice_table, analysis, part))


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
            + _bullseye_figure(part, quantity, unit, f"{quantity.upper()} per segment, mean ({unit})",
                               analysis.stack(part.series).info.field_strength)
            + _safe(_single_frame_images, analysis, part, f"{quantity.upper()} map", aha.get("basal_end"))
            + _safe(_slice_table, analysis, part))


def _single_frame_images(analysis: StudyAnalysis, part: PartResult, what: str, basal_end: str | None) -> str:
    """Basal, mid and apical slices of a one-frame short-axis stack (LGE, maps) with their segmentation."""
    stack, label_map = analysis.stack(part.series), _structure_map(part)
    if label_map is None:
        return ""
    labels = _labels_at(label_map, 0)
    myocardium = labels == label_map.label_names.index("lv_myocardium")
    crop = _crop_box(label_map.labels, stack.spacing)
    figures = [_figure(_overlay(stack.pixels[k, 0], labels[k], label_map.label_names, crop, stack.spacing),
                       f"{what}, {level} (slice {_numbered(k)})") for level, k in _level_slices(myocardium, basal_end)]
    return _figures(figures, _legend(label_map.label_names))


def _slice_table(analysis: StudyAnalysis, part: PartResult) -> str:
    """Every slice of a short-axis part's stack: whether its measurements count it (or leave it out,
    and why) and what was flagged on it (uncertain segmentation, a failed structure check)."""
    if "left_out_slices" not in part.results:
        return ""
    left_out, findings = part.results["left_out_slices"], part.results.get("slice_findings") or {}
    stack = analysis.stack(part.series)
    positions = stack.slice_positions if stack.slice_positions is not None else [None] * stack.n_slices
    rows = ""
    for k, position in enumerate(positions):
        why = left_out.get(str(k))
        use = "counted" if why is None else f"left out: {why}"
        rows += (f'<tr class="{"counted" if why is None else "left-out"}"><th>{_numbered(k)}</th>'
                 f'<td class="num">{_number(position, "mm")}</td><td>{_e(use)}</td>'
                 f"<td>{_e('; '.join(findings.get(str(k), [])) or '—')}</td></tr>")
    summary = f"Slices: {stack.n_slices - len(left_out)} counted, {len(left_out)} left out"
    if left_out:
        summary += f" ({_numbered(sorted(int(k) for k in left_out))})"
    return (f'<details class="slices"{" open" if left_out or findings else ""}><summary>{_e(summary)}</summary>'
            '<table class="slices"><tr><th>Slice</th><th>Position (mm)</th><th>In the measurements</th>'
            f"<th>Flagged</th></tr>{rows}</table></details>")


def _measurement_list(analysis: StudyAnalysis, part: PartResult) -> str:
    """A part without a layout of its own: its measurements as a list, with the label and
    decimals its PartSpec declares."""
    from ..parts import MEASUREMENTS  # the registry imports the report's neighbours, not the report

    def item(m) -> str:
        spec = MEASUREMENTS.get(m.name)
        label, digits = (spec.label, spec.decimals) if spec is not None else (m.name, None)
        unit = "" if m.unit.startswith("{") else _unit(m.unit)  # UCUM annotations such as {ratio} have no unit
        return f"<li>{_e(label)} {_e(m.segment_label)}: {_checked(m, m.unit, digits)} {_e(unit)}</li>"

    items = "".join(item(m) for m in part.measurements)
    return f"<ul>{items}</ul>" if items else "<p>No measurements.</p>"


PART_RENDERERS = {"function": _function, "myocardial_segments": _myocardial_segments, "disease": _disease,
                  "atria": _atria, "lge_extent": _lge_extent, "lge_presence": _lge_presence, "t1_map": _map, "t2_map": _map}


# --- series ---------------------------------------------------------------------------------


def _series_section(analysis: StudyAnalysis) -> str:
    """Every stack read: the header's own description beside the class we gave it, what the
    header's words suggest, and what it was used for (or why not)."""
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
        rows.append([record.key, stack.info.series_description or "—", predicted, header, size,
                     _series_use(analysis, record.key)])
    head = ["Series", "Series description (header)", "Our class", "Header words suggest", "Slices × frames", "Use"]
    return f'<section id="series"><h2>Series</h2>{_table(head, rows, css="series")}</section>'


def _series_use(analysis: StudyAnalysis, key: str) -> str:
    """What the series was used for, or why it was not (its header's verdict first)."""
    used = [s for s in analysis.selection.values() if s.series == key]
    if used:
        parts = ", ".join(p.title for p in analysis.parts.values() if p.series == key)
        return "; ".join(f"Used as {s.title}" + (f" for {parts}" if parts else "") + f": {s.reason}" for s in used)
    why_not = [f"as {s.title}: {a['why_not']}" for s in analysis.selection.values() for a in s.alternatives if a["series"] == key]
    record = analysis.record(key)
    if record.header_rules_out and not any(record.header_rules_out in why for why in why_not):
        why_not.insert(0, f"by its header: {record.header_rules_out}")
    if why_not:
        return "Not used " + "; ".join(why_not)
    c = record.classification
    if c is None or c.image_type is None:
        return "Not used: not classified"
    for role in ROLES:
        chosen = analysis.selection.get(role.name)
        if chosen is not None and chosen.series and c.image_type == role.image_type and role.view in (None, c.view):
            return f"Not used: series {chosen.series} is the {role.title} used"
    return f"Not used: no part reads {c.image_type} images" + (f" of the {c.view} view" if c.view else "")


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


def _probability(p: float | None) -> str:
    return "" if p is None else f" (p = {p:.2f})"


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
            "numbered from 1, as in the quality flags, measurements.csv, the file names and the Slicer scene "
            "(analysis.json keeps positions from 0: its ed_frame 0 is frame 1 here).</p>"
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
ul.implausible{list-style:none;padding:0}ul.implausible li{background:#fde7e7;border-left:5px solid #c0392b;padding:.4em .8em;margin:.2em 0}
.implausible-mark{color:#c0392b;font-weight:bold;cursor:help}
.not-done{background:#f3f3f3;border-left:5px solid #999;padding:.5em .8em}
tr.left-out td,tr.left-out th{background:#f1f1f1;color:#777}
.figures{display:flex;flex-wrap:wrap;gap:.8em}figure{margin:.4em 0;break-inside:avoid}figcaption{font-size:.85em;color:#444}
.legend .swatch{display:inline-block;width:.9em;height:.9em;border:1px solid #555;margin:0 .3em 0 .9em;vertical-align:middle}
footer{margin-top:2em;border-top:1px solid #ccc;font-size:.85em;color:#555}
@media print{body{max-width:none;margin:0;font-size:10pt}section{break-inside:avoid-page}
.banner,.flags li,.swatch{-webkit-print-color-adjust:exact;print-color-adjust:exact}}
"""
