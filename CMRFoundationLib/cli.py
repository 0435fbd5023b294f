"""The ``cmrfm`` command: the library's functions for batch use and for the Slicer module.

    cmrfm example                      generate the built-in sample study, read it back and analyse it
    cmrfm index STUDY [--json]         what a study folder (or NIfTI/NRRD file) contains
    cmrfm make-sample-study OUT --seed N [--pathology P] [--frames N] [--distractors]
    cmrfm predict TASK INPUT OUTPUT [--weights DIR] [--series N] [--device D]
    cmrfm analyze STUDY --out DIR [--weights DIR] [--device D] [--lge-n-sd N] [--series ROLE=N]
                  [--progress-format bar|json]
    cmrfm weights approve FOLDER       check a weights folder you trust and record it in its index
    cmrfm weights check [FOLDER]       load every task of a weights folder as inference would
    cmrfm batch STUDIES OUT [--scheduler ADDRESS] [--workers N] [--retries N] [--timeout S] ...

``--progress-format json`` (for the Slicer module's runner, runner.py) writes one
JSON object per line on stdout, and the human text on stderr:

    {"event": "progress", "phase": "classify", "fraction": 0.21, "message": "classifying series S004"}
    {"event": "error", "message": "no image stack could be read from ...", "exit_code": 1}
    {"event": "done", "out": "/abs/out", "analysis_json": "/abs/out/analysis.json", "report_html": "/abs/out/report.html"}

``fraction`` never decreases and reaches 1.0 with "done", once every output is written.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import __version__

EXAMPLE_SEED = 1


def _print_progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def cmd_index(args: argparse.Namespace) -> int:
    from .dicom import index_study, summarize
    from .volume_io import is_volume_file, read_volume

    path = Path(args.study)
    if path.is_file() and is_volume_file(path):
        try:
            stack = read_volume(path)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps({"path": str(path), "stack": stack.describe(), "warnings": stack.warnings}))
        else:
            print("\n".join([f"{path}: {stack.describe()}", *(f"  warning: {w}" for w in stack.warnings)]))
        return 0
    index = index_study(path)
    print(json.dumps(index.to_dict(), indent=1) if args.json else summarize(index))
    # Problems are reported, not fatal: exit non-zero only when nothing could be read.
    return 0 if index.stacks else 1


def cmd_make_sample_study(args: argparse.Namespace) -> int:
    from .synthetic.study import make_sample_study

    start = time.perf_counter()
    try:
        truth = make_sample_study(args.out, args.seed, pathology=args.pathology, frames=args.frames,
                                  distractors=args.distractors, progress=_print_progress)
    except (FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. a full disk
        from .files import output_error_message

        print(f"error: {output_error_message(args.out, error) or error}", file=sys.stderr)
        return 1
    print(
        f"Wrote synthetic study {args.out} (seed {args.seed}, {truth['pathology']}, "
        f"{len(truth['series'])} series) in {time.perf_counter() - start:.0f} s; "
        f"ground truth in {Path(args.out) / 'ground_truth'}"
    )
    return 0


def cmd_example(args: argparse.Namespace) -> int:
    """The built-in example: a synthetic study, generated once, read back and analysed."""
    from .synthetic.study import load_truth

    out = Path(args.out)
    try:
        existing = load_truth(out)["seed"] if out.exists() else None
    except (OSError, ValueError, KeyError):
        existing = None
    if existing != EXAMPLE_SEED:
        if out.exists() and any(out.iterdir()):
            print(f"error: {out} exists and is not the example study; pass --out to choose another folder", file=sys.stderr)
            return 2
        print(f"Generating the sample study in {out} ...", file=sys.stderr)
        status = cmd_make_sample_study(argparse.Namespace(out=out, seed=EXAMPLE_SEED, pathology=None, frames=25,
                                                                  distractors=False))
        if status:
            return status
    status = cmd_index(argparse.Namespace(study=out / "DICOM", json=False))
    if status:
        return status
    print(f"\nAnalysing the study into {out / 'analysis'} ...")
    status = cmd_analyze(argparse.Namespace(study=out / "DICOM", out=out / "analysis", weights=args.weights,
                                            device=args.device, lge_n_sd=5.0, series=None, batch_size=16,
                                            progress_format="bar"))
    if status == 0:
        _print_example_truth(load_truth(out))
    return status


def _print_example_truth(truth: dict) -> None:
    """The phantom's own values, to read beside the analysis (it knows them exactly)."""
    from .stack import numbered

    lv, rv = truth["lv"], truth["rv"]
    print("\nGround truth of the sample study (the phantom's exact values):")
    print(f"  LV EDV {lv['edv_ml']:.0f} mL, ESV {lv['esv_ml']:.0f} mL, EF {100 * lv['ef']:.0f}%, mass {lv['mass_g']:.0f} g; "
          f"RV EDV {rv['edv_ml']:.0f} mL, ESV {rv['esv_ml']:.0f} mL, EF {100 * rv['ef']:.0f}%")
    ed, es = (numbered(truth["cine"][key]) for key in ("ed_frame", "es_frame"))  # from 1, as in the report
    print(f"  ED frame {ed}, ES frame {es}; pathology {truth['pathology']}; "
          f"LGE {'present' if truth['lge_present'] else 'absent'}")


def _stack_name(stack, index: int, input_path: Path) -> str:
    number = stack.info.series_number
    if number is None:
        return f"{input_path.name.split('.')[0]}_{index}"
    return f"S{number:03d}_{index}"


def cmd_predict(args: argparse.Namespace) -> int:
    """One task on every stack of the input; label maps as volumes, the rest as JSON."""
    from .files import OutputLocationError, check_output_location, output_error_message, write_json
    from .inference import TaskPredictor, levels_from_segmentation
    from .tasks import SEGMENTATION, get_task
    from .volume_io import read_any, write_volume
    from .weights import WeightsError

    try:
        check_output_location(args.output)  # before the model runs, not after
        task = get_task(args.task)
        predictor = TaskPredictor.load(task, args.weights, args.device, args.batch_size)
    except (KeyError, ValueError, FileNotFoundError, WeightsError, OutputLocationError) as error:
        print(f"error: {error.args[0] if isinstance(error, KeyError) else error}", file=sys.stderr)
        return 2
    input_path, out = Path(args.input), Path(args.output)
    stacks, problems = read_any(input_path)
    for problem in problems:
        print(f"warning: {problem.path}: {problem.reason}", file=sys.stderr)
    if args.series is not None:
        stacks = [s for s in stacks if s.info.series_number == args.series]
    if not stacks:
        print(f"error: {input_path}: no image stack to run {task.name} on"
              + (f" in series {args.series}" if args.series is not None else ""), file=sys.stderr)
        return 1
    results, failed = [], 0
    try:
        out.mkdir(parents=True, exist_ok=True)
        for index, stack in enumerate(stacks):
            name = _stack_name(stack, index, input_path)
            try:
                levels = levels_from_segmentation(task, stack, args.weights, args.device)
                prediction = predictor.predict_stack(stack, levels)
            except ValueError as error:  # e.g. a single-frame stack for a cine task
                print(f"warning: {name}: {error}", file=sys.stderr)
                failed += 1
                continue
            summary = prediction.to_dict()
            if task.kind == SEGMENTATION:
                label_file = out / f"{name}_{task.name}.nii.gz"
                write_volume(prediction.labels, stack.ijk_to_lps, label_file)
                summary["label_file"] = label_file.name
            results.append(summary)
            print(f"{name}: {stack.describe()} -> " + (summary.get("label_file") or summary.get("class") or "landmarks"))
        report = {"task": task.name, "input": str(input_path), "labels": list(task.labels),
                  "weights": predictor.manifest.get("files"), "stacks": results}
        write_json(out / f"{task.name}.json", report)
    except Exception as error:  # a full disk mid-run (ITK reports it as a RuntimeError)
        message = output_error_message(out, error)
        if message is None:
            raise
        print(f"error: {message}; the results in {out} are incomplete", file=sys.stderr)
        return 1
    print(f"Wrote {out / (task.name + '.json')}")
    return 0 if results else 1


class _ProgressBar:
    """A one-line progress bar on stderr; on a non-terminal, one line per phase instead."""

    def __init__(self, stream=None, width: int = 30) -> None:
        self.stream, self.width, self.phase = stream or sys.stderr, width, None
        self.live = self.stream.isatty()

    def __call__(self, phase: str, fraction: float, message: str) -> None:
        filled = int(round(fraction * self.width))
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {fraction:4.0%} {message}"
        if self.live:
            self.stream.write("\r" + line[:120].ljust(120) + ("\n" if phase == "done" else ""))
        elif phase != self.phase:
            self.stream.write(line + "\n")
        self.phase = phase
        self.stream.flush()


# Share of the progress bar for writing the outputs (label maps, DICOM SEG and SR, report),
# which comes after analyze_study's own progress (about a quarter of the time on the sample study).
OUTPUT_SHARE = 0.25


def _with_output_step(progress):
    """``progress`` scaled so that the analysis ends at 1 - OUTPUT_SHARE; writing the outputs gets the rest."""

    def analysis_progress(phase: str, fraction: float, message: str) -> None:
        if phase == "done":  # analysed, but nothing written yet
            phase, message = "write", "writing the outputs (label maps, DICOM SEG and SR, report)"
        progress(phase, fraction * (1 - OUTPUT_SHARE), message)

    return analysis_progress


def _emit(event: str, **fields) -> None:
    """One machine-readable event line on stdout (``--progress-format json``)."""
    print(json.dumps({"event": event, **fields}), flush=True)


def _emit_progress(phase: str, fraction: float, message: str) -> None:
    _emit("progress", phase=phase, fraction=round(fraction, 4), message=message)


def _series_choice(text: str) -> tuple[str, int]:
    role, _, number = text.partition("=")
    if not number.isdigit():
        raise argparse.ArgumentTypeError(f"expected ROLE=SERIES_NUMBER, e.g. lge_sax=10, got {text!r}")
    return role, int(number)


def cmd_analyze(args: argparse.Namespace) -> int:
    """The whole study: classify, choose series, measure; JSON, CSV, label maps, DICOM SEG and SR in --out."""
    from .analysis import (
        AnalysisOptions,
        NothingToAnalyze,
        OutputFolderError,
        analyze_study,
        check_output_folder,
        estimated_output_bytes,
        write_outputs,
    )
    from .files import OutputLocationError, check_output_location, output_error_message
    from .weights import check_folder_approved

    events = args.progress_format == "json"
    human = sys.stderr if events else sys.stdout  # with events, stdout holds nothing but event lines
    progress = _emit_progress if events else _ProgressBar()

    def fail(message: str, exit_code: int) -> int:
        print(f"error: {message}", file=sys.stderr)
        if events:
            _emit("error", message=message, exit_code=exit_code)
        return exit_code

    try:
        # Refuse before minutes of work, not after: the output folder, its disk, the weights.
        check_output_folder(args.out)
        check_output_location(args.out, estimated_output_bytes(args.study))
        check_folder_approved(args.weights)
        options = AnalysisOptions(weights_dir=args.weights, device=args.device, batch_size=args.batch_size,
                                  lge_n_sd=args.lge_n_sd, series=dict(args.series or []))
        analysis = analyze_study(args.study, options, progress=_with_output_step(progress))
    except NothingToAnalyze as error:
        return fail(str(error), 1)
    except (OutputFolderError, OutputLocationError, ValueError) as error:  # ValueError: weights, a bad device or role
        return fail(str(error), 2)
    try:
        written = write_outputs(analysis, args.out)
    except Exception as error:  # the disk filled up (or went away) while writing
        message = output_error_message(args.out, error)
        if message is None:
            raise
        return fail(f"{message}; the analysis in {args.out} is incomplete (its analysis.json says so): "
                    "run again to complete it", 1)
    progress("done", 1.0, f"wrote {args.out}")
    print("\n".join(analysis.summary_lines()), file=human)
    print(f"Wrote {written['analysis_json']}, {written['measurements_csv'].name}, {len(written['label_maps'])} label map(s), "
          f"{len(written['dicom_seg'])} DICOM SEG file(s)" + (", a DICOM SR" if written["dicom_sr"] else "")
          + (f"; the report: {written['report_html']}" if written.get("report_html") else ""), file=human)
    if events:
        report = written.get("report_html")
        _emit("done", out=str(Path(args.out).resolve()), analysis_json=str(written["analysis_json"].resolve()),
              report_html=None if report is None else str(report.resolve()))
    return 0


def cmd_weights_approve(args: argparse.Namespace) -> int:
    """Check a weights folder and record its files in a new index (weights a user made or edited)."""
    from .weights import PIN_ENV_VAR, WeightsError, approve_folder, index_sha256

    try:
        names = approve_folder(args.folder)
    except (WeightsError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Approved {len(names)} file(s) in {args.folder}: {', '.join(names)}")
    print(f"Index SHA-256 {index_sha256(args.folder)} (set {PIN_ENV_VAR} to it to accept no other weights)")
    return 0


def cmd_weights_check(args: argparse.Namespace) -> int:
    """Load every task of a weights folder as inference would; one line per task."""
    from .models.phenotype_classifier import FILE_NAME, PhenotypeClassifier
    from .weights import WeightsError, available_tasks, index_sha256, load_task_state, read_index, resolve_weights_dir

    try:
        folder = resolve_weights_dir(args.folder)
        read_index(folder)
    except WeightsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    refused = 0
    for name in available_tasks(folder) + ([FILE_NAME] if (folder / FILE_NAME).exists() else []):
        try:
            PhenotypeClassifier.load(folder) if name == FILE_NAME else load_task_state(folder, name)
            print(f"{name}: ok")
        except (WeightsError, ValueError) as error:
            print(f"{name}: refused: {error}")
            refused += 1
    print(f"{folder}: index SHA-256 {index_sha256(folder)}; {refused} refused")
    return 1 if refused else 0


def cmd_batch(args: argparse.Namespace) -> int:
    """A cohort on Dask (CMRFoundationLib.cohort): every study's outputs, and OUT/cohort.csv and .parquet."""
    from .analysis import AnalysisOptions
    from .cohort import CohortError, StudyListError, find_studies, run_cohort
    from .files import OutputLocationError

    try:
        studies = find_studies(args.studies)
        options = AnalysisOptions(weights_dir=args.weights, device=args.device, batch_size=args.batch_size,
                                  lge_n_sd=args.lge_n_sd)
        result = run_cohort(studies, args.out, options, scheduler=args.scheduler, workers=args.workers,
                            threads_per_worker=args.threads_per_worker, memory_limit=args.memory_limit,
                            retries=args.retries, timeout_s=args.timeout, dashboard_address=args.dashboard_address,
                            table_interval_s=args.table_interval, progress=not args.no_progress)
    except (StudyListError, CohortError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OutputLocationError as error:  # a full disk: one line, the studies done are kept
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted: the finished studies are kept in {args.out}; run the same command to go on", file=sys.stderr)
        return 130
    return 1 if result.failed or result.pending else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cmrfm", description="CMRFoundation: cardiac MR foundation model tools")
    parser.add_argument("--version", action="version", version=f"cmrfm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("example", help="generate the built-in sample study (once), read it back and analyse it")
    p.add_argument("--out", default="output/example", help="where the sample study goes (default: output/example)")
    p.add_argument("--weights", help="weights folder (default: $CMRFM_WEIGHTS, else the project's Resources/Weights)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(func=cmd_example)

    p = sub.add_parser("index", help="list the series and image stacks of a study folder, NIfTI or NRRD file")
    p.add_argument("study", help="DICOM study folder (any file names, any depth) or an image file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("make-sample-study", help="write a synthetic CMR study (DICOM) with exact ground truth")
    p.add_argument("out", help="new or empty output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same study")
    p.add_argument("--pathology", choices=["NOR", "DCM", "HCM", "MINF", "RV"], help="disease pattern (default: random for the seed)")
    p.add_argument("--frames", type=int, default=25, help="cine frames per cardiac cycle (default 25)")
    p.add_argument("--distractors", action="store_true",
                   help="add first-pass perfusion and phase-contrast flow series, which no part may use")
    p.set_defaults(func=cmd_make_sample_study)

    p = sub.add_parser("predict", help="run one task's model on a DICOM folder, NIfTI or NRRD file")
    p.add_argument("task", help="task name (see CMRFoundationLib/tasks.py), e.g. seg_sax_cine")
    p.add_argument("input", help="DICOM folder, DICOM file, NIfTI or NRRD file")
    p.add_argument("output", help="output folder: label maps (.nii.gz, input geometry) and TASK.json")
    p.add_argument("--weights", help="weights folder (default: $CMRFM_WEIGHTS, else the project's Resources/Weights)")
    p.add_argument("--series", type=int, help="only this series number")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=16)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("analyze", help="analyse a whole study: function, AHA segments, atria, LGE, maps, disease class")
    p.add_argument("study", help="DICOM study folder (any file names, any depth)")
    p.add_argument("--out", required=True, help="output folder: new, empty, or a previous analysis (which is replaced)")
    p.add_argument("--weights", help="weights folder (default: $CMRFM_WEIGHTS, else the project's Resources/Weights)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--lge-n-sd", type=float, default=5.0, help="LGE threshold: remote myocardium mean + N x SD (default 5)")
    p.add_argument("--series", type=_series_choice, action="append", metavar="ROLE=N",
                   help="use series N for ROLE (cine_sax, cine_4ch, lge_sax, t1_map, t2_map) instead of the automatic choice")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--progress-format", choices=["bar", "json"], default="bar",
                   help="bar: a progress bar on stderr (default); json: one JSON event per line on stdout, for programs")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("weights", help="check or approve a weights folder")
    actions = p.add_subparsers(dest="action", required=True)
    q = actions.add_parser("approve", help="check a folder of weights you trust and record its files in its index "
                                           "(weights_index.json), e.g. after training or editing a manifest")
    q.add_argument("folder", help="the weights folder")
    q.set_defaults(func=cmd_weights_approve)
    q = actions.add_parser("check", help="load every task of a weights folder as inference would; one line per task")
    q.add_argument("folder", nargs="?", help="weights folder (default: $CMRFM_WEIGHTS, else the project's Resources/Weights)")
    q.set_defaults(func=cmd_weights_check)
    p = sub.add_parser("batch", help="analyse a cohort on Dask: resumable, every study's outputs and one cohort table")
    p.add_argument("studies", help="a folder of study folders, a CSV manifest (column 'path'; optional 'study_id', "
                                   "'subject_id' and covariates) or a Slicer DICOM database folder (ctkDICOM.sql)")
    p.add_argument("out", help="output folder: OUT/<study>/ as `cmrfm analyze` writes it, OUT/cohort.csv and .parquet")
    p.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler, e.g. tcp://10.0.0.5:8786 "
                   "(default: an embedded LocalCluster on this machine)")
    p.add_argument("--workers", type=int, help="embedded cluster: worker processes (default: one per core, "
                   "as far as memory allows 2 GB each)")
    p.add_argument("--threads-per-worker", type=int, help="embedded cluster: studies at a time per worker (default 1)")
    p.add_argument("--memory-limit", help="embedded cluster: per worker, e.g. 4GB (default: the memory shared out)")
    p.add_argument("--retries", type=int, default=2, help="tries again a study that failed or timed out (default 2)")
    p.add_argument("--timeout", type=float, help="seconds one try of a study may take (default: no limit)")
    p.add_argument("--weights", help="weights folder (default: $CMRFM_WEIGHTS, else the project's Resources/Weights); "
                   "on a cluster, a path every worker can read")
    p.add_argument("--device", default="auto", help="auto (each worker its GPU if it has one), cpu, cuda or cuda:N")
    p.add_argument("--lge-n-sd", type=float, default=5.0, help="LGE threshold: remote myocardium mean + N x SD (default 5)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--dashboard-address", default=":8787", help="embedded cluster: the Dask dashboard's address "
                   "(default :8787, another port if taken)")
    p.add_argument("--table-interval", type=float, default=10.0, help="seconds between updates of the cohort table "
                   "(default 10; it is always written at the end)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_batch)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
