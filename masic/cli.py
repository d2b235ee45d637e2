"""The `masic` command: compile, run, deploy, profile, calibrate, inspect, passes, opt, plan-memory.

User errors (bad model files, unsupported modules, impossible budgets, bad options, altered artifacts) print one
line `masic: error: ...` and exit with status 2; no traceback. SIGINT and SIGTERM print `masic: interrupted` and
exit with 128 + the signal (130, 143) after removing what the run had started to write. Anything else is a bug in
masic: one line `masic: internal error: ...; please report`, exit status 70 (EX_SOFTWARE), the traceback only with
MASIC_DEBUG=1. Progress of long steps goes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import shutil
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path

from masic.analysis.cost import measured_call_sites
from masic.arguments import (
    budget_arg,
    budget_range,
    confidence_arg,
    int_in,
    margin_arg,
    png_arg,
    points_arg,
    positive_arg,
    seconds_arg,
    shape_arg,
    steps_arg,
)
from masic.deploy import deploy
from masic.early_exit import ExitRule
from masic.errors import MasicError
from masic.files import read_text
from masic.interrupts import handling_signals
from masic.ir.weight_formats import FLOAT32_WEIGHTS, FORMATS, WeightChoice
from masic.limits import MAX_MANIFEST_BYTES, MAX_TIMESTEPS
from masic.manifest import ESTIMATES, EXECUTABLE, LIB_DIR, MANIFEST_FILE, WEIGHTS_FILE, Manifest, read_manifest
from masic.passes import DEFAULT_PIPELINE, REGISTRY, PassOptions
from masic.passes.check_budget import BudgetError
from masic.port_files import check_output, packed_input, split_output
from masic.profile import PROFILE_FILE, collect, measured_machine, read_profile, summary
from masic.remote import Remote
from masic.report import buffer_table, draw_timeline, stored_share, weight_table, write_memory_report
from masic.units import format_bytes
from masic.workdirs import replacing, scratch

# What --emit prints: the imported IR, the IR after a stage of `masic.driver.STAGES`, or the generated C
EMIT_STAGES = ("ir", "sliced", "layout", "plan", "c")
DEFAULT_ACCURACY_DROP = 0.5  # percentage points that `masic calibrate` may lose by default
EX_SOFTWARE = 70  # sysexits.h: an internal software error
CALIBRATION_PLOT = "calibration.png"
AUTO_WEIGHTS = "auto"  # --weights: each layer's format chosen by running artifacts on the --calibrate data


class UsageError(MasicError, ValueError):
    """A command-line value that makes no sense."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, status 2, as for every other user error
        self.exit(2, f"masic: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from masic.targets import ALIASES, TARGETS

    parser = _Parser(prog="masic", description="Compile spiking neural networks for small ARM64 devices.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    compile_ = sub.add_parser("compile", help="compile a model into a deployable folder")
    compile_.add_argument(
        "model", help="a NIR graph (.nir), torch.export archive (.pt2), torch.save file (.pt) or package.module:factory"
    )
    compile_.add_argument(
        "--budget", type=budget_arg, help="memory budget for model data, e.g. 64MB, 512KiB (default: no limit)"
    )
    compile_.add_argument(
        "--target", default="aarch64", help=f"one of {', '.join([*TARGETS, *ALIASES])} (default aarch64)"
    )
    compile_.add_argument(
        "--timesteps", type=steps_arg, default=16, help=f"default timesteps per inference (16; at most {MAX_TIMESTEPS})"
    )
    compile_.add_argument("--input-shape", type=shape_arg, help="per-sample input shape, e.g. 2,16,16 (no batch)")
    compile_.add_argument("--dt", type=seconds_arg, help="time step in seconds for NIR graphs (required for .nir)")
    compile_.add_argument("-o", "--output", type=Path, default=Path("out"), help="output folder (default out/)")
    compile_.add_argument("--emit", choices=EMIT_STAGES, help="stop after a stage and print it")
    compile_.add_argument(
        "--budget-sweep",
        type=budget_range,
        metavar="LO:HI",
        help="plan at budgets from LO to HI (e.g. 16MB:1GB) instead of compiling; print a table, plot it to -o",
    )
    compile_.add_argument(
        "--weights",
        choices=(*FORMATS, AUTO_WEIGHTS),
        default="float32",
        help="store conv2d and dense weights as float32 (as trained), float16 (IEEE half) or int8 (symmetric per "
        "output channel, float32 scales); auto chooses per layer by accuracy, with --calibrate (default float32)",
    )
    compile_.add_argument("--print-after-all", action="store_true", help="print the IR after every pass")
    compile_.add_argument(
        "--report", type=Path, metavar="DIR", help="write the memory plan (timeline PNG, buffer table, IR) to DIR"
    )
    compile_.add_argument("--dump-passes", type=Path, metavar="DIR", help="write the IR after each pass to DIR")
    compile_.add_argument("--time-passes", action="store_true", help="print how long each pass took")
    compile_.add_argument("--exit-confidence", type=confidence_arg, help="early exit: stop at this softmax confidence")
    compile_.add_argument("--exit-margin", type=margin_arg, help="early exit: stop once the top output leads by this")
    compile_.add_argument("--exit-stable", type=steps_arg, help="early exit: stop once the argmax held this many steps")
    compile_.add_argument(
        "--min-timesteps", type=steps_arg, default=1, help="early exit: never before this step (at most --timesteps)"
    )
    compile_.add_argument(
        "--calibrate", type=Path, metavar="DATA", help="then calibrate the exit rule on DATA.npz (see masic calibrate)"
    )
    compile_.add_argument(
        "--max-accuracy-drop", type=points_arg, help=f"with --calibrate: points of accuracy ({DEFAULT_ACCURACY_DROP})"
    )
    compile_.add_argument("--name", help="model name (default: the file's stem)")
    compile_.add_argument(
        "--profile",
        type=Path,
        metavar="PROFILE.json",
        help="plan with what masic profile measured on the device (an artifact of the same target)",
    )
    compile_.add_argument(
        "--trust-pickle",
        action="store_true",
        help="load a .pt file with full pickle, which runs code from the file (only for files you trust)",
    )

    run = sub.add_parser("run", help="run a compiled folder here (natively, or under qemu for ARM targets)")
    run.add_argument("artifact", type=Path)
    run.add_argument(
        "--input", required=True, type=Path, help="float32 .npy: one sample or (T, *sample); .npz: one per input port"
    )
    run.add_argument("--labels", type=Path, help="int .npy (N,): --input holds N samples; report accuracy")
    run.add_argument("--output", type=Path, help="write every step's output to this .npy (.npz: one per output port)")
    run.add_argument("--predictions", type=Path, help="with --labels: write (N, 2) prediction, timesteps")
    run.add_argument("--timesteps", type=steps_arg)
    run.add_argument("--threads", type=positive_arg)
    run.add_argument("--exit-confidence", type=confidence_arg)
    run.add_argument("--exit-margin", type=margin_arg)
    run.add_argument("--exit-stable", type=steps_arg)
    run.add_argument("--no-exit", action="store_true", help="run every timestep")
    run.add_argument("--min-timesteps", type=steps_arg)

    deploy = sub.add_parser("deploy", help="copy a compiled folder to a device over SSH, checked there")
    deploy.add_argument("artifact", type=Path)
    deploy.add_argument("destination", help="[user@]host[:folder] (default folder: the artifact folder's name)")
    _ssh_arguments(deploy)

    profile = sub.add_parser("profile", help="where a compiled folder's time goes, here or on a device over SSH")
    profile.add_argument("artifact", type=Path)
    profile.add_argument(
        "--host", dest="destination", metavar="DEST", help="[user@]host[:folder] where masic deploy put the artifact"
    )
    profile.add_argument("--input", type=Path, help="float32 .npy input (default: uniform [0, 1), seed 0)")
    profile.add_argument("--runs", type=positive_arg, default=3, help="profiled runs, merged by median (3)")
    profile.add_argument(
        "--threads",
        type=int_in(0, 4096, "a thread count from 0 (one per core) to 4096"),
        default=0,
        help="the model's worker threads (default 0: one per core); plans made with the profile assume as many",
    )
    _ssh_arguments(profile)

    calibrate = sub.add_parser(
        "calibrate", help="choose the fastest early-exit rule within an accuracy drop, on labelled data"
    )
    calibrate.add_argument("artifact", type=Path)
    calibrate.add_argument("--data", required=True, type=Path, help=".npz with x (N, *input) or (N, S, *input), y (N,)")
    calibrate.add_argument(
        "--max-accuracy-drop",
        type=points_arg,
        default=DEFAULT_ACCURACY_DROP,
        help=f"percentage points below full-T accuracy ({DEFAULT_ACCURACY_DROP})",
    )
    calibrate.add_argument("--plot", type=png_arg, help=f"accuracy/timesteps PNG (default ARTIFACT/{CALIBRATION_PLOT})")

    inspect = sub.add_parser("inspect", help="summarise a compiled folder: figures and memory plan")
    inspect.add_argument("artifact", type=Path)
    inspect.add_argument("--png", type=png_arg, help="where to draw the memory timeline (default ARTIFACT/memory.png)")

    sub.add_parser("passes", help="list the passes and what each does")

    opt = sub.add_parser("opt", help="run named passes on a graph in textual IR and print the result")
    opt.add_argument("file", type=Path, help="textual IR (.ir); // lines are comments")
    opt.add_argument(
        "-p", "--passes", default="", help="passes to run, in order, e.g. infer-shapes,spike-dtype (see masic passes)"
    )
    opt.add_argument(
        "--weights", type=Path, help=".npz of parameter values, keys the parameter names (default: random values)"
    )
    opt.add_argument("--budget", type=budget_arg, help="memory budget, as for masic compile (default: no limit)")
    opt.add_argument(
        "--weight-format",
        choices=tuple(FORMATS),
        default="float32",
        help="the format compress-weights stores every conv2d and dense weight in (float32)",
    )
    opt.add_argument(
        "--target", default="aarch64", help="the target whose alignment and machine figures the passes use (aarch64)"
    )
    opt.add_argument("-o", "--output", type=Path, help="write the IR here instead of printing it")

    plan = sub.add_parser("plan-memory", help="place buffers with lifetimes in as little memory as possible")
    plan.add_argument("problem", type=Path, help="CSV with columns id,lower,upper,size[,alignment][,offset]")
    plan.add_argument("--capacity", type=budget_arg, help="the placement must fit these bytes, e.g. 1MiB")
    plan.add_argument(
        "--timeout",
        type=seconds_arg,
        help="seconds to spend (default: with --capacity, search until decided; without, heuristics only)",
    )
    plan.add_argument("--alignment", type=positive_arg, default=1, help="every offset a multiple of this (default 1)")
    plan.add_argument("-o", "--output", type=Path, help="write the solution CSV (the rows plus an offset column)")
    return parser


def _ssh_arguments(parser: argparse.ArgumentParser) -> None:
    """The options passed through to ssh and scp, and the runner of remote model commands."""
    parser.add_argument("-p", "--port", type=int_in(1, 65535, "a port from 1 to 65535"), help="ssh port")
    parser.add_argument("-i", "--identity", type=Path, metavar="KEY", help="ssh private key")
    parser.add_argument(
        "-o", "--option", action="append", default=[], metavar="OPTION", help="ssh option, e.g. -o Port=2222 (repeat)"
    )
    parser.add_argument(
        "--runner", type=shlex.split, default=[], metavar="CMD", help="prefix of model commands there (qemu-aarch64)"
    )


def _remote(args: argparse.Namespace, default_folder: str) -> Remote:
    return Remote.parse(
        args.destination,
        default_folder,
        port=args.port,
        identity=args.identity,
        options=tuple(args.option),
        runner=tuple(args.runner),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; returns the exit status. Without `argv` it is the process itself (the console script,
    `python -m masic.cli`), which ignores SIGINT and SIGTERM once the command is over (see handling_signals)."""
    with handling_signals(ignore_after=argv is None):
        try:
            args = build_parser().parse_args(argv)
            commands = {
                "compile": cmd_compile,
                "run": cmd_run,
                "deploy": cmd_deploy,
                "profile": cmd_profile,
                "calibrate": cmd_calibrate,
                "inspect": cmd_inspect,
                "passes": cmd_passes,
                "opt": cmd_opt,
                "plan-memory": cmd_plan_memory,
            }
            return commands[args.command](args)
        except KeyboardInterrupt as err:  # SIGINT, or SIGTERM through handling_signals; the output is cleaned up
            print("masic: interrupted", file=sys.stderr)
            return getattr(err, "exit_status", 130)
        except (MasicError, OSError) as err:
            print(f"masic: error: {_one_line(err)}", file=sys.stderr)
            return 2
        except Exception as err:  # a bug: still one line, and a status scripts can tell from a user error
            if os.environ.get("MASIC_DEBUG") == "1":
                traceback.print_exc()
            detail = str(err).splitlines()[0] if str(err) else ""
            what = f"{type(err).__name__}: {detail}" if detail else type(err).__name__
            print(f"masic: internal error: {what}; please report (MASIC_DEBUG=1 shows the traceback)", file=sys.stderr)
            return EX_SOFTWARE


def _one_line(err: Exception) -> str:
    """The first line of a diagnostic, plus where the offending node came from in the source model; an OSError
    as `path: reason`."""
    if isinstance(err, OSError) and err.strerror:
        return f"{err.filename}: {err.strerror}" if err.filename else err.strerror
    message = str(err)
    line = message.splitlines()[0] if message else type(err).__name__
    node = getattr(err, "node", None)
    if node is not None:
        line += f" [at %{node.name}" + (f", {node.loc}]" if node.loc else "]")
    return line


def _progress(message: str) -> None:
    print(f"masic: {message}", file=sys.stderr, flush=True)


def cmd_compile(args: argparse.Namespace) -> int:
    """The compiler's stages (`masic.driver`): import, plan (through the --emit stage), build."""
    from masic import driver
    from masic.frontends.dispatch import ImportOptions, model_name
    from masic.frontends.errors import FrontendWarning
    from masic.ir.text import print_graph
    from masic.planning.minimum_budget import budget_refusal
    from masic.targets import get_target
    from masic.weight_search import auto_weights

    target = get_target(args.target)
    exit_rule, weights = _exit_rule(args), _weight_choice(args)  # None for --weights auto, chosen after importing
    started = time.perf_counter()
    name = args.name or model_name(args.model)
    imported = ImportOptions(args.input_shape, args.timesteps, args.dt, name, args.trust_pickle)
    with warnings.catch_warnings(record=True) as caught:  # a frontend's warnings, each one `masic: warning:` line
        warnings.simplefilter("always", FrontendWarning)
        graph = driver.import_model(args.model, imported, _progress)
    for warning in caught:
        if issubclass(warning.category, FrontendWarning):
            _progress(f"warning: {warning.message}")
    if args.emit == "ir":
        print(print_graph(graph), end="")
        return 0
    planned_by = ESTIMATES
    if args.profile:
        source = f"profile {args.profile}"
        machine = measured_machine(target, read_profile(read_text(args.profile, MAX_MANIFEST_BYTES), source), source)
        threads = machine.measured.threads if machine.measured else 0
        planned_by = f"{source}, measured on {target.name} at {threads} thread(s)"
        target = dataclasses.replace(target, machine=machine)
    drop = DEFAULT_ACCURACY_DROP if args.max_accuracy_drop is None else args.max_accuracy_drop
    auto = None if weights is not None else auto_weights(graph, target, args.budget, args.calibrate, drop, _progress)
    options = driver.options_for(target, args.budget, auto.choice if auto else weights)
    if args.budget_sweep:
        return _budget_sweep(graph, args, options, f"{name} ({target.name}, planned by {planned_by})")
    within = f"within {format_bytes(args.budget)}" if args.budget else "without a budget"
    _progress(f"planning {len(graph.nodes)} nodes {within} for {target.name}")
    instruments = driver.Instruments(args.print_after_all, args.dump_passes, args.time_passes, progress=_progress)
    stop_after = args.emit if args.emit in driver.STAGES else None
    try:
        graph = driver.plan(graph, options, stop_after=stop_after, instruments=instruments).graph
    except BudgetError:
        raise UsageError(budget_refusal(graph, options, _progress)) from None
    if args.profile and args.emit not in driver.STAGES and not measured_call_sites(graph, target.machine):
        raise UsageError(f"profile {args.profile} times no kernel of {name}; profile an artifact of this model")
    if args.emit in driver.STAGES:
        print(print_graph(graph), end="")
        return 0
    if args.emit == "c":
        print(driver.emit_c(graph, exit_rule), end="")
        return 0

    def calibrate(folder: Path) -> None:  # in the staging folder, before it replaces the output folder
        _calibrate(read_manifest(folder), args.calibrate, drop, folder / CALIBRATION_PLOT, args.output)

    then = auto.write if auto else (calibrate if args.calibrate else None)  # auto: the exit rule is not calibrated
    manifest = driver.build(graph, target, args.output, exit_rule, args.budget, _progress, then, planned_by)
    if args.report:
        write_memory_report(graph, args.report, f"{name} ({target.name})", args.budget)
        _progress(f"memory report written to {args.report}/")
    plan = graph.plan
    budget = format_bytes(args.budget) if args.budget else "none"
    share = stored_share(manifest["weights"]["layers"])
    formats = "" if weights == FLOAT32_WEIGHTS else f" ({args.weights}: layer weights {share:.2f}x float32's)"
    print(
        f"masic: wrote {args.output}/ for {target.name} in {time.perf_counter() - started:.1f}s: "
        f"arena {format_bytes(plan.arena_bytes)} (lower bound {format_bytes(plan.lower_bound)}, budget {budget}), "
        f"weights {format_bytes(manifest['weights']['bytes'])}{formats}, {len(manifest['kernels'])} kernels",
        file=sys.stderr,
    )
    return 0


def _budget_sweep(graph, args: argparse.Namespace, options: PassOptions, title: str) -> int:
    """--budget-sweep: the planner's table and plot across budgets for the --weights format, and every format's
    plans side by side, without building kernels."""
    from masic.planning.sweep import draw_sweep, sweep_report

    if args.budget is not None or args.emit:
        raise UsageError("--budget-sweep plans at many budgets; drop --budget and --emit")
    low, high = args.budget_sweep
    _progress(f"planning at budgets from {format_bytes(low)} to {format_bytes(high)}, weights in each format")
    result, text = sweep_report(graph, low, high, options, title)
    print(text)
    args.output.mkdir(parents=True, exist_ok=True)
    draw_sweep(result, args.output / "budget-sweep.png", f"{title}: plans across budgets")
    _progress(f"plot written to {args.output / 'budget-sweep.png'}")
    return 0


def _weight_choice(args: argparse.Namespace) -> WeightChoice | None:
    """--weights F for every layer; None for auto (`masic.weight_search.auto_weights` chooses per layer then)."""
    if args.weights != AUTO_WEIGHTS:
        return WeightChoice(args.weights)
    if not args.calibrate:
        raise UsageError("--weights auto chooses per layer by accuracy: give --calibrate DATA.npz (labelled inputs)")
    return None


def _exit_rule(args: argparse.Namespace) -> ExitRule:
    """The compiled-in exit rule the compile flags ask for (at most one rule flag, and none with --calibrate)."""
    flags = {"softmax_confidence": args.exit_confidence, "margin": args.exit_margin, "stable_argmax": args.exit_stable}
    chosen = {rule: value for rule, value in flags.items() if value is not None}
    if len(chosen) > 1:
        raise UsageError("--exit-confidence, --exit-margin and --exit-stable each choose the exit rule; pass one")
    if chosen and args.calibrate:
        raise UsageError("--calibrate chooses the exit rule; drop --exit-confidence, --exit-margin, --exit-stable")
    if args.max_accuracy_drop is not None and not args.calibrate:
        raise UsageError("--max-accuracy-drop only applies with --calibrate")
    if not chosen:
        if args.min_timesteps != 1:
            raise UsageError("--min-timesteps only applies with --exit-confidence, --exit-margin or --exit-stable")
        return ExitRule()
    if args.min_timesteps > args.timesteps:
        raise UsageError(f"--min-timesteps {args.min_timesteps} exceeds --timesteps {args.timesteps}")
    ((rule, value),) = chosen.items()
    return ExitRule(rule, float(value), args.min_timesteps)


def _check_runnable(manifest: Manifest) -> None:
    """Raises UsageError if the artifact's target needs an emulator that is not installed here."""
    emulator = manifest.target.emulator
    if emulator and shutil.which(emulator[0]) is None:
        raise UsageError(f"{emulator[0]} is needed to run {manifest.target.name} code here")


# `masic run` options passed on to the executable as they are
RUN_FLAGS = (
    "labels",
    "output",
    "predictions",
    "timesteps",
    "threads",
    "exit_confidence",
    "exit_margin",
    "exit_stable",
    "min_timesteps",
)


def cmd_run(args: argparse.Namespace) -> int:
    manifest = read_manifest(args.artifact)
    _check_runnable(manifest)
    with scratch("masic-run-") as folder:  # the packed input and output of a model with ports (.npz files)
        command = [*manifest.command(), "--input", str(packed_input(manifest.input_ports, args.input, folder))]
        named_output = args.output is not None and args.output.suffix == ".npz"
        if named_output:
            check_output(manifest.output_ports, args.output)
        for flag in RUN_FLAGS:
            value = folder / "output.npy" if flag == "output" and named_output else getattr(args, flag)
            if value is not None:
                command += [f"--{flag.replace('_', '-')}", str(value)]
        if args.no_exit:
            command.append("--no-exit")
        status = subprocess.run(command, check=False).returncode
        if named_output and status == 0:
            split_output(manifest.output_ports, folder / "output.npy", args.output)
        return status


def cmd_deploy(args: argparse.Namespace) -> int:
    remote = _remote(args, args.artifact.resolve().name)
    command = deploy(args.artifact, remote)
    print(f"masic: deployed {args.artifact} to {remote.host}:{remote.folder}, checked there; run it with:")
    print(command)
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    manifest = read_manifest(args.artifact)
    remote = _remote(args, args.artifact.resolve().name) if args.destination else None
    if remote is None:
        _check_runnable(manifest)
    merged = collect(manifest, remote, args.input, args.runs, _progress, args.threads)
    print(summary(merged, manifest))
    print(f"\nprofile written to {args.artifact / PROFILE_FILE}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Calibrates a copy of the artifact folder, which then replaces it in one step."""
    published = read_manifest(args.artifact)
    with replacing(args.artifact) as folder:
        _copy_artifact(published.folder, folder)
        png = _redirected(args.plot or args.artifact / CALIBRATION_PLOT, args.artifact, folder)
        _calibrate(read_manifest(folder), args.data, args.max_accuracy_drop, png, args.artifact)
    return 0


def _copy_artifact(source: Path, copy: Path) -> None:
    """Copies the artifact folder's files; weights.bin, which no tool rewrites, as a hard link where it can."""
    for entry in source.iterdir():
        if entry.name == WEIGHTS_FILE:
            try:
                os.link(entry, copy / entry.name)
                continue
            except OSError:
                pass  # a file system without hard links: copy
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, copy / entry.name, symlinks=True)
        else:
            shutil.copy2(entry, copy / entry.name, follow_symlinks=False)


def _redirected(path: Path, published: Path, staging: Path) -> Path:
    """Where to write `path`: in the staging folder if it names a file in the published folder (else the swap
    would drop it)."""
    return staging / path.name if path.resolve().parent == published.resolve() else path


def _calibrate(manifest: Manifest, data: Path, max_accuracy_drop: float, png: Path, published: Path) -> None:
    """Calibrates the staged artifact folder `manifest.folder`, to be published as `published`; prints the
    candidates' table and the choice."""
    from masic.calibrate import calibrate_artifact, format_table, summary

    _check_runnable(manifest)
    calibration = calibrate_artifact(manifest, data, max_accuracy_drop, png, _progress)
    print(format_table(calibration))
    print(summary(calibration))
    shown_png = published / png.name if png.parent == manifest.folder else png
    written = f"{published / EXECUTABLE}, the libraries in {published / LIB_DIR} and {published / MANIFEST_FILE}"
    print(f"wrote the rule into {written}; plot: {shown_png}")


def cmd_inspect(args: argparse.Namespace) -> int:
    manifest = read_manifest(args.artifact)
    budget = manifest.budget_bytes
    print(f"model      {manifest.name} for {manifest.target.name} ({manifest.target.description})")
    print(f"input      float32{list(manifest.input_shape)}   output float32{list(manifest.output_shape)}")
    for kind, ports in (("inputs", manifest.input_ports), ("outputs", manifest.output_ports)):
        if ports:  # the parts of a packed input or output, in order (`masic run` takes and writes them as .npz)
            print(f"{kind:<10} " + ", ".join(f"{p.name}{list(p.shape)}" for p in ports))
    print(f"timesteps  {manifest.timesteps}   exit rule {manifest.exit_rule.describe()} ({manifest.exit_source})")
    arena, lower_bound = manifest.arena_bytes, manifest.lower_bound_bytes
    print(
        f"arena      {arena} bytes (lower bound {lower_bound}, ratio {arena / max(lower_bound, 1):.3f}, "
        f"budget {budget if budget is not None else 'none'})"
    )
    print(f"weights    {manifest.weights_bytes} bytes in {manifest.weights_pieces} pieces, each with its CRC-32C")
    if manifest.weight_layers:  # each conv2d and dense weight's format (`masic compile --weights`)
        print(f"\n{weight_table(list(manifest.weight_layers))}")
    rows = list(manifest.buffers)
    print(f"\n{buffer_table(rows)}")
    png = args.png or args.artifact / "memory.png"
    title = f"{manifest.name} ({manifest.target.name}): memory plan of one timestep"
    draw_timeline(rows, png, title, arena, lower_bound, budget)
    print(f"\nmemory timeline written to {png}")
    return 0


def cmd_passes(args: argparse.Namespace) -> int:
    for name, entry in REGISTRY.items():
        marker = "*" if name in DEFAULT_PIPELINE else " "
        print(f"{marker} {name:<16} {entry.summary}")
    return 0


def cmd_opt(args: argparse.Namespace) -> int:
    """Runs the named passes on an .ir file (`masic.opt`) and prints or writes the resulting IR."""
    from masic.driver import options_for
    from masic.ir.text import print_graph
    from masic.opt import pass_list, read_graph, run_passes
    from masic.targets import get_target

    target = get_target(args.target)
    names = pass_list(args.passes)
    graph = read_graph(args.file, args.weights)
    options = options_for(target, args.budget, WeightChoice(args.weight_format))
    text = print_graph(run_passes(graph, names, options))
    if args.output:
        args.output.write_text(text)
    else:
        print(text, end="")
    return 0


def cmd_plan_memory(args: argparse.Namespace) -> int:
    """Solves a memory-planning CSV; prints height, lower bound, ratio, method, time; writes the solution CSV."""
    from masic.memplan import read_csv, solve, write_csv

    started = time.perf_counter()  # --timeout bounds reading the problem too
    problem = read_csv(args.problem, None if args.timeout is None else started + args.timeout)
    solution = solve(problem, args.capacity, args.timeout, args.alignment, started)
    print(f"buffers      {len(problem)}")
    print(f"height       {solution.height} bytes ({format_bytes(solution.height)})")
    print(f"lower bound  {solution.lower_bound} bytes ({format_bytes(solution.lower_bound)})")
    print(f"ratio        {solution.ratio:.4f}")
    print(f"method       {solution.method}")
    print(f"time         {solution.seconds:.2f} s")
    if args.output:
        write_csv(args.output, problem, solution.offsets)
        print(f"solution     {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
