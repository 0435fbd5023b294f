"""``analyze_study``: a whole CMR study from DICOM folder to measurements, in one call.

Steps: read and index (every unusable file is kept as a Problem), classify every stack
from its pixels, choose the series of each role (select.py), then run the parts
(parts.py) in order. A part that cannot run is recorded as skipped or failed, with the
reason, and the rest goes on; only an unreadable study (no image stack at all) raises.

``progress(phase, fraction, message)`` is called at every step with the fraction of the
whole analysis done (0..1); ``cancel()`` is asked between steps (and between stacks while
classifying) and, when it returns True, the analysis stops with ``Cancelled``.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence

from ..problems import Problem
from ..stack import ImageStack
from ..volume_io import read_any
from . import results as r
from .acquisition import not_analysable
from .classify import LOW_CONFIDENCE, apply_plane_geometry, classify_stack
from .geometry import slice_gap_findings
from .options import AnalysisOptions
from .parts import PARTS, Context, PartSkipped
from .predictors import ModelUnavailable, Predictors
from .results import Flag, PartResult, SeriesRecord, StudyAnalysis
from .select import ROLES, check_roles, select_series

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str, float, str], None]

# Relative duration of each phase, for the overall fraction done, in the order they run
# (each part declares its own weight).
PHASE_WEIGHTS = {"read": 1.0, "classify": 2.0, "select": 0.1, **{spec.name: spec.progress_weight for spec in PARTS}}


class Cancelled(Exception):
    """The analysis was cancelled (``cancel()`` returned True); nothing is returned."""


class NothingToAnalyze(ValueError):
    """Not a single image stack could be read from the input."""


def analyze_study(
    study: str | os.PathLike | Sequence[ImageStack] | Sequence[str],
    options: AnalysisOptions | None = None,
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
    models: dict | None = None,
) -> StudyAnalysis:
    """Analyse a study folder (or DICOM file, NIfTI/NRRD file, a list of one study's DICOM
    files, or already loaded stacks). ``models``: loaded models to reuse and add to
    (Predictors), so that a batch loads each model once, not once per study; it must come
    from analyses with the same weights, device and batch size."""
    from ..inference import choose_device  # torch comes with the first analysis, not with this module

    options = options or AnalysisOptions()
    choose_device(options.device)  # a bad device or role is the caller's error: raise before any work
    check_roles(options.series)
    steps = _Steps(progress, cancel)

    steps.start("read", "reading the study")
    if isinstance(study, (str, os.PathLike)):
        source = os.fspath(study)
        stacks, problems = read_any(source)
    elif study and isinstance(study[0], (str, os.PathLike)):  # one study's files, e.g. from a DICOM database
        source = f"{len(study)} DICOM files under {os.path.commonpath([os.path.abspath(p) for p in study])}"
        stacks, problems = read_any(study)
    else:
        source, stacks, problems = "stacks", list(study), []
    stacks = _only_mr(stacks, problems)
    if not stacks:
        raise NothingToAnalyze(_nothing_read(source, problems))
    analysis = StudyAnalysis(source, options, series=_records(stacks), problems=problems)
    for problem in problems:
        if problem.severity != "info":
            analysis.flags.append(Flag(problem.severity, r.UNUSABLE_FILE, str(problem)))

    predictors = Predictors(options.weights_dir, options.device, options.batch_size, loaded=models)
    _classify(analysis, predictors, steps)

    steps.start("select", "choosing the series of each part")
    analysis.selection = select_series(analysis.series, options.series)
    used = {s.series for s in analysis.selection.values() if s.series is not None}
    _flag_classification(analysis, used)
    _flag_selection(analysis, used)

    context = Context(predictors, options.lge_n_sd, flag=lambda *args: analysis.flags.append(Flag(*args)),
                      parts=analysis.parts)
    titles = {role.name: role.title for role in ROLES}
    for spec in PARTS:
        selection = analysis.selection[spec.role]
        part = PartResult(spec.name, spec.title, series=selection.series,
                          units={m.name: m.unit for m in spec.measurements})
        analysis.parts[spec.name] = part
        steps.start(spec.name, f"{spec.title}" + (f" on series {part.series}" if part.series else ""))
        if part.series is None:
            part.reason = f"no {titles[spec.role]}: {selection.reason}"
            analysis.flags.append(Flag("info", r.PART_NOT_DONE, f"{spec.title} skipped: {part.reason}", part=spec.name))
            continue
        _run_part(spec, part, analysis, context)
    analysis.weights = predictors.record()
    steps.finish()
    return analysis


def _run_part(spec, part: PartResult, analysis: StudyAnalysis, context: Context) -> None:
    """Run one part; whatever goes wrong is recorded in the part, never raised (except cancelling)."""
    try:
        spec.run(context, part, analysis.stack(part.series))
        part.status = r.OK
    except (PartSkipped, ModelUnavailable) as error:
        part.status, part.reason = r.SKIPPED, str(error)
    except Exception as error:  # a failing part must not stop the others; the reason is kept
        log.exception("analysis part %s failed", spec.name)
        part.status, part.reason = r.FAILED, f"{type(error).__name__}: {error}"
    if part.status != r.OK:
        severity = "error" if part.status == r.FAILED else "warning"
        analysis.flags.append(Flag(severity, r.PART_NOT_DONE, f"{part.title} {part.status}: {part.reason}",
                                   part.series, part.name))
        return
    _check_plausibility(spec, part, analysis)
    _check_header(part, analysis)


def _check_plausibility(spec, part: PartResult, analysis: StudyAnalysis) -> None:
    """Mark every value outside its declared plausible range (``measurements.plausibility``)
    and flag it: a number no heart can have is shown as such, never as an ordinary result."""
    declared = {m.name: m for m in spec.measurements}
    field_strength = analysis.stack(part.series).info.field_strength
    for row in part.measurements:
        measurement = declared[row.name]
        if measurement.plausible is None:
            continue
        problem = measurement.plausible.problem(row.value, row.unit, measurement.label, field_strength)
        if problem is not None:
            row.check = problem if row.check is None else f"{row.check}; {problem}"
            where = f" ({row.segment_label})" if row.segment is not None else ""
            analysis.flags.append(Flag("warning", r.IMPLAUSIBLE_VALUE, problem + where, part.series, part.name))


def _check_header(part: PartResult, analysis: StudyAnalysis) -> None:
    """A series the user named although its header rules out every part (a flow or perfusion
    series, ``acquisition.not_analysable``) gives numbers that are marked, never ordinary results."""
    reason = analysis.record(part.series).header_rules_out
    if reason is None or not part.measurements:
        return
    problem = f"series {part.series} is not analysable by its header: {reason}"
    for row in part.measurements:
        row.check = problem if row.check is None else f"{row.check}; {problem}"
    analysis.flags.append(Flag("warning", r.HEADER_DISAGREES, f"{part.title}: every value is marked: {problem}",
                               part.series, part.name))


def _only_mr(stacks: list[ImageStack], problems: list[Problem]) -> list[ImageStack]:
    """The MR stacks; others (e.g. the DICOM SEG of an earlier analysis saved in the study) become info problems."""
    kept = []
    for stack in stacks:
        if stack.info.modality in ("MR", ""):  # "" for NIfTI and NRRD
            kept.append(stack)
        else:
            where = stack.sources[0][0][0] if stack.sources else "stack"
            problems.append(Problem(where, f"series {stack.info.series_number} '{stack.info.series_description}' is "
                                           f"{stack.info.modality}, not MR: not analysed", "info"))
    return kept


def _records(stacks: list[ImageStack]) -> list[SeriesRecord]:
    """One record per stack, keyed "S006"; several stacks of one series are "S001-1", "S001-2", ..."""
    bases = [f"S{s.info.series_number:03d}" if s.info.series_number is not None else f"stack{i + 1}"
             for i, s in enumerate(stacks)]
    counts, seen = Counter(bases), Counter()
    records = []
    for base, stack in zip(bases, stacks):
        seen[base] += 1
        records.append(SeriesRecord(base if counts[base] == 1 else f"{base}-{seen[base]}", stack,
                                    header_rules_out=not_analysable(stack)))
    return records


def _classify(analysis: StudyAnalysis, predictors: Predictors, steps: "_Steps") -> None:
    models = {}
    for task in ("image_type", "cine_view"):
        try:
            models[task] = predictors.get(task)
        except ModelUnavailable as error:
            models[task] = None
            analysis.flags.append(Flag("warning", r.MODEL_UNAVAILABLE, f"{error}; series are classified from their headers"))
    for i, record in enumerate(analysis.series):
        steps.start("classify", f"classifying series {record.key}", i / len(analysis.series))
        try:
            record.classification = classify_stack(record.stack, models["image_type"], models["cine_view"])
        except Exception as error:  # one odd stack must not stop the study
            log.exception("classifying %s failed", record.key)
            analysis.flags.append(Flag("error", r.SERIES_NOT_USED, f"series {record.key} not used: classification "
                                       f"failed: {type(error).__name__}: {error}", record.key))
    apply_plane_geometry([(record.key, record.stack, record.classification) for record in analysis.series
                          if record.classification is not None])


def _flag_classification(analysis: StudyAnalysis, used: set[str]) -> None:
    """Header/pixel disagreements and low-confidence classes; warnings for the series used, info for the rest."""
    for record in analysis.series:
        c = record.classification
        if c is None:
            continue
        severity = "warning" if record.key in used else "info"
        for text in c.disagreements():
            analysis.flags.append(Flag(severity, r.HEADER_DISAGREES, f"series {record.key}: {text}", record.key))
        for what, value, p in (("image type", c.image_type, c.image_type_confidence), ("view", c.view, c.view_confidence)):
            if p is not None and p < LOW_CONFIDENCE:
                analysis.flags.append(Flag(severity, r.LOW_CONFIDENCE, f"series {record.key}: {what} {value} with low "
                                           f"confidence (p={p:.2f})", record.key))


def _flag_selection(analysis: StudyAnalysis, used: set[str]) -> None:
    """Series left out of a role (a warning when the role stayed empty), series whose header rules
    out every part (whatever their pixels say), and slice gaps in the series used."""
    said = set()
    for selection in analysis.selection.values():
        severity = "info" if selection.series is not None else "warning"
        for alternative in selection.alternatives:
            said.add((alternative["series"], alternative["why_not"]))
            analysis.flags.append(Flag(severity, r.SERIES_NOT_USED, f"series {alternative['series']} not used as "
                                       f"{selection.title}: {alternative['why_not']}", alternative["series"]))
    for record in analysis.series:
        reason = record.header_rules_out
        if reason and record.key not in used and (record.key, reason) not in said:
            analysis.flags.append(Flag("info", r.SERIES_NOT_USED, f"series {record.key} not used: {reason}", record.key))
    for key in sorted(used):
        for finding in slice_gap_findings(analysis.stack(key)):
            analysis.flags.append(Flag("warning", r.SLICE_GAPS, f"series {key}: {finding}", key))


def _nothing_read(source: str, problems: list[Problem]) -> str:
    text = f"no image stack could be read from {source}"
    if not problems:
        return text + " (no DICOM images, NIfTI or NRRD found)"
    shown = "; ".join(str(p) for p in problems[:3])
    return f"{text}: {shown}" + (f" (and {len(problems) - 3} more problems)" if len(problems) > 3 else "")


class _Steps:
    """Progress reporting and the cancel check between steps."""

    def __init__(self, progress: ProgressCallback | None, cancel: Callable[[], bool] | None) -> None:
        self.progress, self.cancel = progress, cancel
        self.total = sum(PHASE_WEIGHTS.values())
        self.done_before: dict[str, float] = {}
        running = 0.0
        for phase, weight in PHASE_WEIGHTS.items():
            self.done_before[phase] = running
            running += weight

    def start(self, phase: str, message: str, within: float = 0.0) -> None:
        """Enter ``phase`` (``within``: how far into it, 0..1); raises Cancelled when asked to stop."""
        if self.cancel is not None and self.cancel():
            raise Cancelled(f"analysis cancelled by the user (at: {message})")
        if self.progress is not None:
            fraction = (self.done_before[phase] + within * PHASE_WEIGHTS[phase]) / self.total
            self.progress(phase, fraction, message)

    def finish(self) -> None:
        if self.progress is not None:
            self.progress("done", 1.0, "analysis complete")
