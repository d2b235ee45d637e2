"""The `masic` command: compile, run, inspect, passes.

User errors (bad model files, unsupported modules, impossible budgets, bad options) print one line
`masic: error: ...` and exit with status 2; no traceback. Progress of long steps goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from masic.errors import MasicError
from masic.passes import DEFAULT_PIPELINE, REGISTRY, PassOptions
from masic.passes.check_budget import format_bytes
from masic.report import buffer_table, draw_timeline, plan_rows
from masic.units import parse_bytes

EMIT_STAGES = ("ir", "sliced", "plan", "c")
# How many passes of the pipeline run before an --emit stage is printed ("ir" prints the frontend's graph).
STAGE_PASSES = {"sliced": DEFAULT_PIPELINE.index("fold-batchnorm") + 1, "plan": len(DEFAULT_PIPELINE)}


class UsageError(MasicError, ValueError):
    """A command-line value that makes no sense."""


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"malformed shape {text!r}: expected integers like 2,16,16") from None
    if not shape or any(s <= 0 for s in shape):
        raise argparse.ArgumentTypeError(f"shape {text!r} must have positive sizes")
    return shape


def _budget(text: str) -> int:
    try:
        return parse_bytes(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _confidence(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a confidence in (0, 1], got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, status 2, as for every other user error
        self.exit(2, f"masic: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from masic.targets import ALIASES, TARGETS

    parser = _Parser(prog="masic", description="Compile spiking neural networks for small ARM64 devices.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    compile_ = sub.add_parser("compile", help="compile a model into a deployable folder")
    compile_.add_argument("model", help="a torch.save file (.pt) or package.module:factory")
    compile_.add_argument(
        "--budget", type=_budget, help="memory budget for model data, e.g. 64MB, 512KiB (default: no limit)"
    )
    compile_.add_argument(
        "--target", default="aarch64", help=f"one of {', '.join([*TARGETS, *ALIASES])} (default aarch64)"
    )
    compile_.add_argument("--timesteps", type=_positive, default=16, help="default timesteps per inference (16)")
    compile_.add_argument("--input-shape", type=_shape, help="per-sample input shape, e.g. 2,16,16 (no batch)")
    compile_.add_argument("-o", "--output", type=Path, default=Path("out"), help="output folder (default out/)")
    compile_.add_argument("--emit", choices=EMIT_STAGES, help="stop after a stage and print it")
    compile_.add_argument("--print-after-all", action="store_true", help="print the IR after every pass")
    compile_.add_argument(
        "--report", type=Path, metavar="DIR", help="write the memory plan (timeline PNG, buffer table, IR) to DIR"
    )
    compile_.add_argument("--dump-passes", type=Path, metavar="DIR", help="write the IR after each pass to DIR")
    compile_.add_argument("--time-passes", action="store_true", help="print how long each pass took")
    compile_.add_argument("--exit-confidence", type=_confidence, help="early exit: stop at this softmax confidence")
    compile_.add_argument("--min-timesteps", type=_positive, default=1, help="early exit: never before this step")
    compile_.add_argument("--name", help="model name (default: the file's stem)")
    compile_.add_argument(
        "--trust-pickle",
        action="store_true",
        help="load a .pt file with full pickle, which runs code from the file (only for files you trust)",
    )

    run = sub.add_parser("run", help="run a compiled folder here (natively, or under qemu for ARM targets)")
    run.add_argument("artifact", type=Path)
    run.add_argument("--input", required=True, type=Path, help="float32 .npy: one sample or (T, *sample)")
    run.add_argument("--output", type=Path, help="write every step's output to this .npy")
    run.add_argument("--timesteps", type=_positive)
    run.add_argument("--threads", type=_positive)
    run.add_argument("--exit-confidence", type=_confidence)
    run.add_argument("--min-timesteps", type=_positive)

    inspect = sub.add_parser("inspect", help="summarise a compiled folder: figures and memory plan")
    inspect.add_argument("artifact", type=Path)
    inspect.add_argument("--png", type=Path, help="where to draw the memory timeline (default ARTIFACT/memory.png)")

    sub.add_parser("passes", help="list the passes and what each does")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"compile": cmd_compile, "run": cmd_run, "inspect": cmd_inspect, "passes": cmd_passes}[args.command](
            args
        )
    except (MasicError, OSError) as err:
        print(f"masic: error: {_one_line(str(err), err)}", file=sys.stderr)
        return 2


def _one_line(message: str, err: Exception) -> str:
    """The first line of a diagnostic, plus where the offending node came from in the source model."""
    line = message.splitlines()[0] if message else type(err).__name__
    node = getattr(err, "node", None)
    if node is not None:
        line += f" [at %{node.name}" + (f", {node.loc}]" if node.loc else "]")
    return line


def _progress(message: str) -> None:
    print(f"masic: {message}", file=sys.stderr, flush=True)


def cmd_compile(args: argparse.Namespace) -> int:
    from masic.frontends.norse import import_norse, load_model
    from masic.ir.text import print_graph
    from masic.passes.manager import PassManager
    from masic.targets import get_target

    target = get_target(args.target)
    if args.exit_confidence is None and args.min_timesteps != 1:
        raise UsageError("--min-timesteps only applies with --exit-confidence")
    started = time.perf_counter()
    _progress(f"importing {args.model}")
    model = load_model(args.model, trust_pickle=args.trust_pickle)
    name = args.name or Path(args.model.split(":")[-1]).stem.replace("-", "_")
    graph = import_norse(model, args.input_shape, args.timesteps, name)
    if args.emit == "ir":
        print(print_graph(graph), end="")
        return 0
    passes = DEFAULT_PIPELINE[: STAGE_PASSES.get(args.emit, len(DEFAULT_PIPELINE))]
    manager = PassManager(
        passes,
        PassOptions(budget=args.budget, alignment=target.alignment),
        print_after_all=args.print_after_all,
        dump_dir=args.dump_passes,
    )
    graph = manager.run(graph)
    if args.time_passes:
        for pass_name, seconds in manager.timings:
            print(f"masic: pass {pass_name:<16} {seconds * 1e3:8.2f} ms", file=sys.stderr)
    if args.emit in ("sliced", "plan"):
        print(print_graph(graph), end="")
        return 0

    from masic.codegen.artifact import generate_c, write_artifact
    from masic.codegen.lower import ExitRule

    exit_rule = ExitRule(args.exit_confidence, args.min_timesteps)
    if args.emit == "c":
        import tempfile

        with tempfile.TemporaryDirectory() as scratch:
            print(generate_c(graph, exit_rule, Path(scratch) / "weights.bin")[0], end="")
        return 0
    manifest = write_artifact(graph, target, args.output, exit_rule, args.budget, _progress)
    if args.report:
        write_report(graph, args.report, f"{name} ({target.name})", args.budget)
        _progress(f"memory report written to {args.report}/")
    plan = graph.plan
    budget = format_bytes(args.budget) if args.budget else "none"
    print(
        f"masic: wrote {args.output}/ for {target.name} in {time.perf_counter() - started:.1f}s: "
        f"arena {format_bytes(plan.arena_bytes)} (lower bound {format_bytes(plan.lower_bound)}, budget {budget}), "
        f"weights {format_bytes(manifest['weights']['bytes'])}, {len(manifest['kernels'])} kernels",
        file=sys.stderr,
    )
    return 0


def write_report(graph, folder: Path, title: str, budget: int | None) -> None:
    """memory.png, buffers.txt and plan.ir of a planned graph."""
    from masic.ir.text import print_graph

    folder.mkdir(parents=True, exist_ok=True)
    rows = plan_rows(graph)
    plan = graph.plan
    draw_timeline(rows, folder / "memory.png", f"{title}: memory plan", plan.arena_bytes, plan.lower_bound, budget)
    (folder / "buffers.txt").write_text(buffer_table(rows) + "\n")
    (folder / "plan.ir").write_text(print_graph(graph))


def load_manifest(artifact: Path) -> dict:
    path = artifact / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UsageError(f"{artifact} is not a masic artifact folder ({path}: {err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "masic-artifact/1":
        raise UsageError(f"{path} is not a masic manifest")
    return manifest


def artifact_command(artifact: Path, manifest: dict) -> list[str]:
    """How to start the artifact's executable on this machine."""
    return [*manifest["target"]["emulator"], str(artifact / "model")]


def cmd_run(args: argparse.Namespace) -> int:
    manifest = load_manifest(args.artifact)
    command = [*artifact_command(args.artifact, manifest), "--input", str(args.input)]
    for flag in ("output", "timesteps", "threads", "exit_confidence", "min_timesteps"):
        value = getattr(args, flag)
        if value is not None:
            command += [f"--{flag.replace('_', '-')}", str(value)]
    if manifest["target"]["emulator"] and not _which(manifest["target"]["emulator"][0]):
        raise UsageError(f"{manifest['target']['emulator'][0]} is needed to run {manifest['target']['name']} code here")
    return subprocess.run(command, check=False).returncode


def _which(program: str) -> bool:
    return any(os.access(Path(d) / program, os.X_OK) for d in os.environ.get("PATH", "").split(os.pathsep))


def cmd_inspect(args: argparse.Namespace) -> int:
    manifest = load_manifest(args.artifact)
    budget = manifest["budget_bytes"]
    print(f"model      {manifest['name']} for {manifest['target']['name']} ({manifest['target']['description']})")
    print(f"input      float32{manifest['input']['shape']}   output float32{manifest['output']['shape']}")
    print(f"timesteps  {manifest['timesteps']}   exit rule {manifest['exit_rule']['rule']}")
    print(
        f"arena      {manifest['arena_bytes']} bytes (lower bound {manifest['lower_bound_bytes']}, "
        f"ratio {manifest['arena_bytes'] / max(manifest['lower_bound_bytes'], 1):.3f}, "
        f"budget {budget if budget is not None else 'none'})"
    )
    print(f"weights    {manifest['weights']['bytes']} bytes, crc32 {manifest['weights']['crc32']}")
    print(f"\n{buffer_table(manifest['buffers'])}")
    png = args.png or args.artifact / "memory.png"
    title = f"{manifest['name']} ({manifest['target']['name']}): memory plan of one timestep"
    draw_timeline(manifest["buffers"], png, title, manifest["arena_bytes"], manifest["lower_bound_bytes"], budget)
    print(f"\nmemory timeline written to {png}")
    return 0


def cmd_passes(args: argparse.Namespace) -> int:
    for name, entry in REGISTRY.items():
        marker = "*" if name in DEFAULT_PIPELINE else " "
        print(f"{marker} {name:<16} {entry.summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
