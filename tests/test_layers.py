"""Layering points one way: every import in masic (with masic.frontends and masic.targets) goes to its own layer or a
lower one, as `LAYERS` lists them. The import graph is read from the source with `ast`, imports inside functions
included, so a module that imports upwards lazily is caught too; and only masic.codegen imports tvm."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Where each package's source lives (pyproject.toml's package-dir)
ROOTS = {"masic": REPO / "masic", "masic.frontends": REPO / "frontends", "masic.targets": REPO / "targets"}

# Lowest first. A module belongs to the layer of the longest package listed that holds it ("masic" is only the
# package's own __init__: every other module is listed by its package or name).
LAYERS: dict[str, tuple[str, ...]] = {
    # what everything may use: errors, limits, files, byte counts, signals, work folders, the exit rule's
    # arithmetic, the memory placement solver (a problem of lifetimes and sizes, no IR), the command line's argument
    # types, the SSH client
    "base": (
        "masic",
        "masic.errors",
        "masic.limits",
        "masic.units",
        "masic.files",
        "masic.interrupts",
        "masic.workdirs",
        "masic.early_exit",
        "masic.memplan",
        "masic.arguments",
        "masic.remote",
    ),
    "ir": ("masic.ir",),
    # beside the IR: model files -> IR, what a target is, the artifact's manifest format, the .npz files of a model's
    # input and output ports
    "beside ir": ("masic.frontends", "masic.targets", "masic.manifest", "masic.port_files"),
    "analysis": ("masic.analysis", "masic.report"),
    "passes": ("masic.passes",),
    "codegen": ("masic.codegen",),
    # the stages as functions, and the tools built on them: searches over plans, `masic opt`, calibration (of the
    # exit rule and of the weight formats), deploying to a device and profiling there
    "driver": (
        "masic.driver",
        "masic.planning",
        "masic.opt",
        "masic.calibrate",
        "masic.weight_search",
        "masic.deploy",
        "masic.profile",
    ),
    "cli": ("masic.cli",),
}
RANK = {prefix: rank for rank, prefixes in enumerate(LAYERS.values()) for prefix in prefixes}
NAMES = list(LAYERS)


def modules(roots: dict[str, Path]) -> dict[str, Path]:
    """Every module of the packages, by dotted name."""
    found = {}
    for package, folder in roots.items():
        for path in folder.rglob("*.py"):
            parts = [part for part in path.relative_to(folder).with_suffix("").parts if part != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The modules `name` imports (a `from package import module` names the module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base


def layer(module: str) -> int | None:
    """The rank of a masic module's layer; None outside masic."""
    prefixes = [p for p in RANK if module == p or (p != "masic" and module.startswith(p + "."))]
    return RANK[max(prefixes, key=len)] if prefixes else None


def upward_imports(roots: dict[str, Path]) -> list[str]:
    known = modules(roots)
    found = []
    for name, path in sorted(known.items()):
        if layer(name) is None:  # test_every_module_has_a_layer names it
            continue
        for target in sorted(set(imports(name, path, known))):
            if layer(target) is not None and layer(target) > layer(name):
                found.append(f"{name} ({NAMES[layer(name)]}) imports {target} ({NAMES[layer(target)]})")
    return found


def test_every_module_has_a_layer() -> None:
    assert [name for name in modules(ROOTS) if layer(name) is None] == []


def test_imports_point_down_the_layers() -> None:
    assert upward_imports(ROOTS) == []


def test_only_codegen_imports_tvm() -> None:
    known = modules(ROOTS)
    outside = [
        name
        for name, path in known.items()
        if not name.startswith("masic.codegen") and any(t.split(".")[0] == "tvm" for t in imports(name, path, known))
    ]
    assert outside == []
