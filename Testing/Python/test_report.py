"""report.html on the real pipeline output of the sample study, and on crafted analyses.

The pipeline runs once (the session's sample_analysis, conftest) with the series of each role named, so that every
part runs whatever the small carried classifier says; the report is then read back as a
reader's browser would get it: parsed, its SVGs counted, its PNGs decoded.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import html
import io
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from CMRFoundationLib.analysis import AnalysisOptions, outputs, report, write_outputs
from CMRFoundationLib.analysis.report import images
from CMRFoundationLib.analysis.results import Flag, PartResult, SeriesRecord, StudyAnalysis
from CMRFoundationLib.stack import ImageStack, SeriesInfo
from CMRFoundationLib.terminology import STRUCTURES
from CMRFoundationLib.weights import resolve_weights_dir

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VOID_ELEMENTS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@pytest.fixture(scope="module")
def analysis(sample_analysis):
    return sample_analysis[0]


@pytest.fixture(scope="module")
def written(analysis, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "out"
    return out, write_outputs(analysis, out)


@pytest.fixture(scope="module")
def page(written) -> str:
    return written[1]["report_html"].read_text(encoding="utf-8")


class StrictParser(HTMLParser):
    """Every element closed, in order (html.parser itself forgives anything)."""

    def __init__(self):
        super().__init__()
        self.open, self.errors = [], []

    def handle_starttag(self, tag, attrs):
        if tag not in VOID_ELEMENTS:
            self.open.append(tag)

    def handle_startendtag(self, tag, attrs):
        pass

    def handle_endtag(self, tag):
        if self.open and self.open[-1] == tag:
            self.open.pop()
        else:
            self.errors.append(f"</{tag}> at {self.getpos()} while {self.open[-3:]} are open")


def assert_well_formed(text: str) -> None:
    parser = StrictParser()
    parser.feed(text)
    parser.close()
    assert not parser.errors, parser.errors[:5]
    assert not parser.open, parser.open


class Elements(HTMLParser):
    """Every start tag as (tag, attributes, the attributes of the enclosing svg or None)."""

    def __init__(self):
        super().__init__()
        self.found, self.svg = [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "svg":
            self.svg = attrs
        self.found.append((tag, attrs, self.svg))

    def handle_endtag(self, tag):
        if tag == "svg":
            self.svg = None


def elements(text: str) -> list[tuple[str, dict, dict | None]]:
    parser = Elements()
    parser.feed(text)
    return parser.found


def section(text: str, name: str) -> str:
    found = re.search(rf'<section id="part-{name}">.*?</section>', text, re.S)
    assert found, f"no section for part {name}"
    return found.group(0)


def png_images(text: str, tmp_path) -> list[tuple[str, np.ndarray, dict]]:
    """(caption, pixels [rows, cols, 3], img attributes) of every inline PNG, decoded by SimpleITK."""
    images = []
    for i, (_tag, attrs, _) in enumerate(e for e in elements(text) if e[0] == "img"):
        assert attrs["src"].startswith("data:image/png;base64,")
        data = base64.b64decode(attrs["src"].split(",", 1)[1], validate=True)
        assert data.startswith(PNG_SIGNATURE)
        path = tmp_path / f"image{i}.png"
        path.write_bytes(data)
        images.append((attrs["alt"], sitk.GetArrayFromImage(sitk.ReadImage(str(path))), attrs))
    return images


# --- the report of a real analysis -----------------------------------------------------------


def test_write_outputs_writes_and_lists_the_report(written):
    out, paths = written
    assert paths["report_html"] == out / "report.html" and paths["report_html"].is_file()
    document = json.loads((out / "analysis.json").read_text())
    assert document["complete"] and document["outputs"]["report_html"] == "report.html"
    assert not any("report" in reason.lower() for reason in document["outputs"]["not_written"])


def test_report_is_well_formed_and_self_contained(page):
    assert page.startswith("<!DOCTYPE html>")
    assert_well_formed(page)
    assert "<script" not in page.lower()
    for tag, attrs, _ in elements(page):
        assert not attrs.get("src", "data:").startswith(("http", "//")), (tag, attrs)
        assert attrs.get("href", "#").startswith("#"), (tag, attrs)  # only links within the page
    assert "not for clinical use" in page


def test_header_names_patient_software_and_cpu_weights(page, analysis):
    facts = analysis.study_facts()
    header = page[page.index("<header>"):page.index("</header>")]
    assert html.escape(facts["patient_id"]) in header
    assert "34 years" in header and "180 cm" in header and "2026-12-12" in header
    assert f"{analysis.value('bsa'):.2f} m²" in header
    # The carried weights' manifests name the vit_nano encoder: the banner says they are the CPU set.
    assert "small CPU-trained weight set" in header
    for task, files in analysis.weights["tasks"].items():
        assert files[0]["sha256"][:12] in header, task


def test_function_table_shows_the_measured_ef(page, analysis):
    function = section(page, "function")
    for side in ("lv", "rv"):
        assert f'<td class="num">{analysis.value(f"{side}_ef"):.1f}</td>' in function
    assert f'<td class="num">{analysis.value("lv_mass"):.1f}</td>' in function


def test_volume_curves_have_a_point_per_cine_frame(page, analysis):
    function = analysis.parts["function"]
    n_frames = analysis.stack(function.series).n_frames
    curves = {attrs["data-curve"]: attrs["points"] for tag, attrs, _ in elements(section(page, "function"))
              if tag == "polyline"}
    assert set(curves) == {"lv", "rv"}
    for points in curves.values():
        assert len(points.split()) == n_frames
    phases = [attrs for tag, attrs, _ in elements(section(page, "function")) if attrs.get("class") == "phase"]
    assert len(phases) == 2  # ED and ES marked
    assert "volume (mL)" in section(page, "function")


def test_one_bullseye_with_16_segments_per_plot(page, analysis):
    expected = {"myocardial_segments": "wall_thickness", "lge_extent": "lge_extent", "t1_map": "t1", "t2_map": "t2"}
    for part_name, plot in expected.items():
        part = analysis.parts[part_name]
        with_data = {m.segment for m in part.measurements if m.name == plot and m.segment is not None}
        assert with_data, part_name
        segments = [attrs for tag, attrs, svg in elements(section(page, part_name))
                    if tag == "path" and svg is not None and svg.get("data-plot") == plot]
        assert sorted(int(s["data-segment"]) for s in segments) == list(range(1, 17)), part_name
        grey = [s for s in segments if s["fill"] == report._css(report.NO_DATA)]
        assert len(grey) == 16 - len(with_data), part_name
    plots = [attrs["data-plot"] for tag, attrs, _ in elements(page) if tag == "svg" and "bullseye" in attrs.get("class", "")]
    assert sorted(plots) == sorted(expected.values())


def test_map_bullseyes_use_fixed_clinical_colour_scales(page, analysis):
    """A T1 of 1000 ms has one colour in every 1.5 T study (not the min-max of the study):
    the scale is stated under the plot and every segment's fill follows it."""
    from CMRFoundationLib.measurements.bullseye import colour_of, fixed_scale

    for part_name, plot in (("t1_map", "t1"), ("t2_map", "t2")):
        part = analysis.parts[part_name]
        low, high = fixed_scale(plot, analysis.stack(part.series).info.field_strength)
        values = {m.segment: m.value for m in part.measurements if m.name == plot and m.segment is not None}
        fills = {int(attrs["data-segment"]): attrs["fill"] for tag, attrs, svg in elements(section(page, part_name))
                 if tag == "path" and svg is not None and svg.get("data-plot") == plot}
        assert values and all(fills[k] == report._css(colour_of(v, low, high)) for k, v in values.items())
        assert f"colour scale {low:.0f}-{high:.0f} ms (fixed)" in section(page, part_name)


def test_images_are_pngs_that_decode(page, tmp_path):
    images = png_images(page, tmp_path)
    for caption, pixels, attrs in images:
        assert pixels.shape == (int(attrs["height"]), int(attrs["width"]), 3), caption
        assert pixels.std() > 0, caption  # an image, not a blank
    for part_name, count in (("function", 6), ("atria", 2), ("lge_extent", 3), ("t1_map", 3), ("t2_map", 3)):
        assert section(page, part_name).count("<img ") == count, part_name
    # The RV insertion points are marked on the end-diastolic short-axis slices, not at ES.
    anterior = np.array(STRUCTURES["anterior_rv_insertion"].color)
    marked = {caption: bool((pixels == anterior).all(axis=2).any()) for caption, pixels, _ in images
              if caption.startswith(("Basal", "Mid", "Apical"))}
    assert any(flag for caption, flag in marked.items() if ", ED " in caption)
    assert not any(flag for caption, flag in marked.items() if ", ES " in caption)


def mark_centre(pixels: np.ndarray, colour) -> tuple[float, float]:
    """(row, col) of the centre of the pixels drawn in ``colour``."""
    rows, cols = np.nonzero((pixels == np.array(colour)).all(axis=2))
    assert rows.size, "no mark in that colour"
    return float(rows.mean()), float(cols.mean())


def test_insertion_marks_sit_at_their_row_and_column(page, analysis, tmp_path):
    """Each ED mark is drawn where its (row, col) falls in the cropped, enlarged slice, not transposed."""
    function, segments = analysis.parts["function"], analysis.parts["myocardial_segments"]
    label_map = images._structure_map(function)
    r0, r1, c0, c1 = images._crop_box(label_map.labels, analysis.stack(function.series).spacing)
    anterior = {entry["slice"]: entry["anterior"]["row_col"] for entry in segments.results["insertion_points"]
                if entry.get("anterior")}
    checked = 0
    for caption, pixels, _ in png_images(section(page, "function"), tmp_path):
        k = int(re.search(r"slice (\d+)", caption).group(1)) - 1  # captions count from 1
        if ", ED " not in caption or k not in anterior:
            continue
        fr, fc = pixels.shape[0] / (r1 - r0), pixels.shape[1] / (c1 - c0)  # enlargement along rows, columns
        row, col = anterior[k]
        expected = ((row - r0 + 0.5) * fr - 0.5, (col - c0 + 0.5) * fc - 0.5)
        assert mark_centre(pixels, STRUCTURES["anterior_rv_insertion"].color) == pytest.approx(expected, abs=1.5), caption
        checked += 1
    assert checked


def test_overlays_use_the_terminology_colours(page, tmp_path):
    images = {caption: pixels for caption, pixels, _ in png_images(page, tmp_path)}
    mid_ed = next(pixels for caption, pixels in images.items() if caption.startswith("Mid-ventricular, ED"))
    for name in ("lv_blood_pool", "lv_myocardium", "rv_blood_pool"):
        assert (mid_ed == np.array(STRUCTURES[name].color)).all(axis=2).any(), name
        assert html.escape(STRUCTURES[name].display_name) in section(page, "function")


def test_flags_are_listed_errors_and_warnings_first(page, analysis):
    flags = page[page.index('<section id="flags">'):]
    flags = flags[:flags.index("</section>")]
    assert analysis.flags
    folded = flags.find("<details>")
    for flag in analysis.flags:
        at = flags.index(html.escape(flag.message))
        if flag.severity in ("error", "warning"):
            assert folded == -1 or at < folded, flag
        else:
            assert folded != -1 and at > folded, flag


def test_series_table_lists_every_series_and_its_use(page, analysis):
    table = page[page.index('<section id="series">'):]
    for record in analysis.series:
        assert f"<tr><th>{html.escape(record.key)}</th>" in table
    sax = analysis.parts["function"].series
    row = re.search(rf"<tr><th>{sax}</th>.*?</tr>", table).group(0)
    assert "Used as short-axis cine for Ventricular function" in row
    p = analysis.record(sax).classification.image_type_confidence
    assert f"cine (p = {p:.2f})" in row


def test_a_skipped_or_failed_part_shows_its_reason(analysis):
    parts = dict(analysis.parts)
    parts["atria"] = PartResult("atria", "Atria (4-chamber)", status="skipped",
                                reason="no 4-chamber cine: no series classified as 4-chamber cine")
    parts["t1_map"] = PartResult("t1_map", "T1 map", status="failed", series=parts["t1_map"].series,
                                 reason="ValueError: no LV myocardium found")
    text = report.render_report(dataclasses.replace(analysis, parts=parts))
    assert_well_formed(text)
    atria, t1 = section(text, "atria"), section(text, "t1_map")
    assert "Skipped" in atria and "no series classified as 4-chamber cine" in atria and "<img" not in atria
    assert "Failed" in t1 and "no LV myocardium found" in t1 and "bullseye" not in t1
    assert "<img" in section(text, "function")  # the others are drawn as before


def test_a_section_that_cannot_be_drawn_says_why(analysis, monkeypatch):
    def broken(analysis, part):
        raise KeyError("probabilities")

    monkeypatch.setitem(report.PART_RENDERERS, "disease", broken)
    text = report.render_report(analysis)
    assert_well_formed(text)
    assert "could not be drawn: KeyError" in section(text, "disease")
    assert "bullseye" in section(text, "t2_map")


def test_outputs_are_written_when_the_report_fails(analysis, tmp_path, monkeypatch):
    def broken(analysis, out_dir):
        raise RuntimeError("disk full")

    monkeypatch.setattr(outputs, "write_html_report", broken)
    out = tmp_path / "out"
    paths = write_outputs(analysis, out)
    document = json.loads((out / "analysis.json").read_text())
    assert document["complete"] and document["outputs"]["report_html"] is None and paths["report_html"] is None
    assert "HTML report: RuntimeError: disk full" in document["outputs"]["not_written"]
    assert not (out / "report.html").exists()
    assert (out / "measurements.csv").is_file() and paths["label_maps"] and paths["dicom_sr"] is not None


# --- crafted analyses ------------------------------------------------------------------------


def crafted(weights: dict | None = None) -> StudyAnalysis:
    """One hostile series: header text that would be markup if it were not escaped."""
    info = SeriesInfo(series_number=3, series_description="<script>alert('cine')</script>",
                      patient_name="Doe^<b>Jane</b>", patient_id="ID&<1>", patient_age="045Y",
                      study_date="20240131")
    pixels = np.arange(2 * 16 * 16, dtype=np.float32).reshape(2, 1, 16, 16)
    analysis = StudyAnalysis("stacks", AnalysisOptions(), series=[SeriesRecord("S003", ImageStack(pixels, np.eye(4), info))])
    analysis.parts["function"] = PartResult("function", "Ventricular function", status="skipped", series="S003",
                                            reason="needs a cine <b>bold</b> & more")
    analysis.flags.append(Flag("warning", "part_not_done", "series S003 '<script>' was not used", "S003", "function"))
    analysis.weights = weights or {}
    return analysis


def test_header_text_is_escaped(tmp_path):
    path = report.write_html_report(crafted(), tmp_path)
    text = path.read_text(encoding="utf-8")
    assert_well_formed(text)
    assert "<script" not in text and "<b>" not in text
    assert "&lt;script&gt;alert(&#x27;cine&#x27;)&lt;/script&gt;" in text
    assert "ID&amp;&lt;1&gt;" in text and "Doe &lt;b&gt;Jane&lt;/b&gt;" in text
    assert "needs a cine &lt;b&gt;bold&lt;/b&gt; &amp; more" in section(text, "function")
    assert "No model weights were used" in text


def test_weights_are_described_only_from_matching_manifests():
    folder = str(resolve_weights_dir())
    replaced = {"folder": folder, "tasks": {"seg_sax_cine": [{"path": "seg_sax_cine.safetensors", "sha256": "0" * 64}]}}
    text = report.render_report(crafted(replaced))
    assert "seg_sax_cine could not be read or no longer match" in text and "CPU-trained" not in text


def test_png_encoder_round_trips(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, size=(7, 5, 3), dtype=np.uint8)
    path = tmp_path / "small.png"
    path.write_bytes(report.png_bytes(rgb))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))), rgb)


def test_a_mark_off_the_diagonal_is_drawn_at_its_row_and_column():
    """A wide slice with tall pixels, one mark at (row 3, col 12): swapping rows and columns anywhere
    between the mark and the decoded PNG moves the mark or changes the PNG's shape."""
    image = np.random.default_rng(1).uniform(0, 100, size=(20, 30))
    labels = np.zeros((20, 30), dtype=np.uint8)
    colour = (0, 255, 0)
    rgb = images._overlay(image, labels, ["background"], (0, 20, 0, 30), (1.0, 2.0, 8.0), [(3, 12, colour)])
    pixels = np.asarray(Image.open(io.BytesIO(images.png_bytes(rgb))).convert("RGB"))
    # spacing is (column, row, slice): rows are 2 mm, so they are enlarged twice as much as columns (8 and 4).
    assert pixels.shape == (160, 120, 3)
    assert mark_centre(pixels, colour) == pytest.approx(((3 + 0.5) * 8 - 0.5, (12 + 0.5) * 4 - 0.5), abs=0.5)
    figure = images._figure(rgb, "mark")
    assert 'width="120" height="160"' in figure


# --- what a reader reads: frame numbers, slices left out, the series table (parsed HTML) ------


class Tables(HTMLParser):
    """The text of every table (by class, each row as (row class, cell texts)) and paragraph
    (by class) of a page, under the id of the section holding it."""

    def __init__(self):
        super().__init__()
        self.tables: dict[tuple[str, str], list[tuple[str, list[str]]]] = {}
        self.paragraphs: dict[tuple[str, str], list[str]] = {}
        self.section, self.table, self.row, self.cell, self.paragraph = "", None, None, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.section = attrs.get("id", "")
        elif tag == "table":
            self.table = self.tables.setdefault((self.section, attrs.get("class", "")), [])
        elif tag == "tr" and self.table is not None:
            self.row = (attrs.get("class", ""), [])
            self.table.append(self.row)
        elif tag in ("td", "th") and self.row is not None:
            self.cell = []
        elif tag == "p":
            self.paragraph = (attrs.get("class", ""), [])

    def handle_data(self, data):
        for text in (self.cell, self.paragraph and self.paragraph[1]):
            if text is not None:
                text.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.row[1].append("".join(self.cell).strip())
            self.cell = None
        elif tag == "table":
            self.table = self.row = None
        elif tag == "p" and self.paragraph is not None:
            self.paragraphs.setdefault((self.section, self.paragraph[0]), []).append("".join(self.paragraph[1]))
            self.paragraph = None


def tables(page: str) -> Tables:
    parser = Tables()
    parser.feed(page)
    return parser


def test_ed_and_es_frames_agree_in_report_json_csv_and_file_names(written, page):
    """One numbering for people (from 1) in the report, measurements.csv and the DICOM SEG file
    names; analysis.json keeps positions from 0 (results.py, stack.numbered)."""
    out, files = written
    document = json.loads((out / outputs.ANALYSIS_FILE).read_text(encoding="utf-8"))
    function = document["parts"]["function"]["results"]
    ed, es = function["ed_frame"] + 1, function["es_frame"] + 1  # as a person counts them
    parsed = tables(page)
    (cycle,) = parsed.paragraphs[("part-function", "cycle")]
    assert re.search(r"\(ED\) at frame (\d+), end-systole \(ES\) at frame (\d+)", cycle).groups() == (str(ed), str(es))
    captions = re.findall(r'alt="[^"]*?, (ED|ES) \(slice \d+, frame (\d+)\)"', section(page, "function"))
    assert captions and all(int(frame) == {"ED": ed, "ES": es}[phase] for phase, frame in captions)
    wall = document["parts"]["myocardial_segments"]["results"]["frame"] + 1
    assert wall == ed and f"End-diastolic wall thickness (frame {ed})" in section(page, "myocardial_segments")

    with open(out / outputs.CSV_FILE, newline="", encoding="utf-8") as handle:
        rows = {(row["name"], row["segment"]): row for row in csv.DictReader(handle)}
    assert (rows[("lv_edv", "")]["frame"], rows[("lv_esv", "")]["frame"]) == (str(ed), str(es))
    assert rows[("lv_mass", "")]["frame"] == str(ed) and rows[("lv_ef", "")]["frame"] == ""  # EF: two frames
    by_name = {(m["name"], m["segment"]): m for m in document["measurements"]}
    assert (by_name[("lv_edv", None)]["frame"], by_name[("lv_esv", None)]["frame"]) == (ed - 1, es - 1)
    seg_files = sorted(p.name for p in files["dicom_seg"] if "seg_sax_cine" in p.parent.name)
    assert seg_files == sorted({f"SEG_frame{ed:03d}.dcm", f"SEG_frame{es:03d}.dcm"})


def test_every_slice_is_listed_with_whether_it_counts_and_why_not(written, page, analysis):
    document = json.loads((written[0] / outputs.ANALYSIS_FILE).read_text(encoding="utf-8"))
    parsed = tables(page)
    listed = 0
    for name, part in document["parts"].items():
        if part["status"] != "ok" or "left_out_slices" not in part["results"]:
            continue
        left_out = part["results"]["left_out_slices"]
        findings = part["results"].get("slice_findings") or {}
        head, *rows = parsed.tables[(f"part-{name}", "slices")]
        assert head[1] == ["Slice", "Position (mm)", "In the measurements", "Flagged"]
        assert [cells[0] for _, cells in rows] == [str(k + 1) for k in range(analysis.stack(part["series"]).n_slices)]
        for k, (row_class, cells) in enumerate(rows):
            if str(k) in left_out:
                assert row_class == "left-out" and cells[2] == f"left out: {left_out[str(k)]}"
            else:
                assert row_class == "counted" and cells[2] == "counted"
            assert cells[3] == ("; ".join(findings[str(k)]) if str(k) in findings else "—")
        listed += 1
    assert listed >= 2  # the short-axis cine and the LGE at least
    lge = document["parts"]["lge_extent"]["results"]
    assert lge["left_out_slices"] and set(lge["excluded_slices"]) <= set(lge["left_out_slices"])


def test_series_table_shows_the_header_description_beside_our_class(page, analysis):
    head, *rows = tables(page).tables[("series", "series")]
    assert head[1][:3] == ["Series", "Series description (header)", "Our class"]
    by_key = {cells[0]: cells for _, cells in rows}
    assert set(by_key) == {record.key for record in analysis.series}
    for record in analysis.series:
        cells = by_key[record.key]
        assert cells[1] == (record.stack.info.series_description or "—")
        assert cells[2].startswith(record.classification.image_type)
