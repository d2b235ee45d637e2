"""Memory reports of a plan: which layer owns each buffer, a table of buffers, the format each layer's weight is
stored in (`weight_rows`, `weight_table`), and a timeline picture.

The picture puts schedule positions on x and arena addresses on y, one rectangle per buffer coloured by kind and
labelled by the layer it belongs to, with the budget drawn as a line. It works from the `buffers` list of a
manifest (or `plan_rows` of a planned graph), so `masic inspect` can draw it for an artifact without the model.
"""

from __future__ import annotations

from pathlib import Path

from masic.ir import names
from masic.ir.graph import Graph
from masic.ir.names import BufferId
from masic.ir.ops import compressible, state_names
from masic.ir.weight_formats import FORMAT_OF_DTYPE

KIND_COLOURS = {
    "weight": "#4c72b0",
    "state": "#dd8452",
    "activation": "#55a868",
    "scratch": "#c44e52",
    "io": "#8172b3",
}


def buffer_labels(graph: Graph) -> dict[BufferId, str]:
    """Buffer -> the layer(s) whose values it holds (origin in the source model, else the node name), else its
    name; a buffer shared in place, e.g. a dense output overwritten by its neuron, names both."""
    plan = graph.plan
    assert plan is not None, "buffer_labels needs a planned graph"
    layer_of: dict[BufferId, str] = {}
    for node in graph.nodes:
        layer = node.loc or f"%{node.name}"
        for key in (
            names.value(node.name),
            names.scratch(node.name),
            *state_names(node),
            *(names.param(r.name) for _, r in node.param_refs()),
        ):
            layer_of.setdefault(key, layer)
    layers: dict[BufferId, list[str]] = {b.name: [] for b in plan.buffers}
    for value, buffer in (*plan.values, *((b.name, b.name) for b in plan.buffers)):
        layer = layer_of.get(value)
        if layer and layer not in layers[buffer]:
            layers[buffer].append(layer)
    return {name: " / ".join(found) or str(name) for name, found in layers.items()}


def plan_rows(graph: Graph) -> list[dict[str, object]]:
    """The plan's buffers as manifest rows: name, kind, bytes, offset, live [start, end), layer."""
    labels = buffer_labels(graph)
    return [
        {
            "name": str(b.name),
            "kind": b.kind,
            "bytes": b.size,
            "offset": b.offset,
            "live": [b.start, b.end],
            "layer": labels[b.name],
        }
        for b in graph.plan.buffers
    ]


def weight_rows(graph: Graph) -> list[dict[str, object]]:
    """Each conv2d and dense weight of a graph (once, however many layers share it) as manifest rows: the node,
    its layer, the weight, its format (`masic.ir.weight_formats.FORMATS`), its int8 scale parameter (None), the
    bytes stored (weight and scale, as weights.bin holds them) and the bytes the weight takes as float32."""
    rows, seen = [], set()
    for node in graph.nodes:
        ref = node.attr("weight") if compressible(node.op) else None
        if ref is None or ref.name in seen:
            continue
        seen.add(ref.name)
        weight, scale = graph.param(ref.name).type, node.attr("weight_scale")
        rows.append(
            {
                "node": node.name,
                "layer": node.loc or f"%{node.name}",
                "weight": ref.name,
                "format": FORMAT_OF_DTYPE[weight.dtype],
                "scale": None if scale is None else scale.name,
                "bytes": weight.nbytes + (0 if scale is None else graph.param(scale.name).type.nbytes),
                "float32_bytes": 4 * weight.numel,
            }
        )
    return rows


def weight_table(rows: list[dict[str, object]]) -> str:
    """A fixed-width table of the layers' weights: format, scale parameter, stored and float32 bytes."""
    lines = [f"{'weight':<24} {'format':<8} {'scale':<24} {'bytes':>10} {'float32':>10}  layer"]
    for row in rows:
        lines.append(
            f"@{row['weight']:<23} {row['format']:<8} {'@' + row['scale'] if row['scale'] else '-':<24} "
            f"{row['bytes']:>10} {row['float32_bytes']:>10}  {row['layer']}"
        )
    stored, full = sum(r["bytes"] for r in rows), sum(r["float32_bytes"] for r in rows)
    lines.append(f"{'total':<58} {stored:>10} {full:>10}  ({stored_share(rows):.2f}x float32)")
    return "\n".join(lines)


def stored_share(rows: list[dict[str, object]]) -> float:
    """The bytes of the weights in `weight_rows` as stored, over their bytes as float32."""
    return sum(r["bytes"] for r in rows) / max(sum(r["float32_bytes"] for r in rows), 1)


def buffer_table(rows: list[dict[str, object]]) -> str:
    """A fixed-width table of buffers, sorted by offset."""
    lines = [f"{'buffer':<24} {'kind':<10} {'bytes':>10} {'offset':>10} {'live':>9}  layer"]
    for row in sorted(rows, key=lambda r: (r["offset"], r["name"])):
        start, end = row["live"]
        lines.append(
            f"{row['name']:<24} {row['kind']:<10} {row['bytes']:>10} {row['offset']:>10} {f'[{start},{end})':>9}  "
            f"{row.get('layer', '')}"
        )
    return "\n".join(lines)


def draw_timeline(
    rows: list[dict[str, object]], path: Path, title: str, arena_bytes: int, lower_bound: int, budget: int | None
) -> None:
    """Writes the memory timeline PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    steps = max((int(r["live"][1]) for r in rows), default=1)
    fig, ax = plt.subplots(figsize=(11, 6.5), dpi=110)
    ax.set_facecolor("#f4f4f4")
    for row in rows:
        start, end = row["live"]
        offset, size = int(row["offset"]), int(row["bytes"])
        ax.add_patch(
            Rectangle(
                (start, offset), end - start, size, facecolor=KIND_COLOURS[str(row["kind"])], edgecolor="black", lw=0.4
            )
        )
        if size >= 0.03 * max(arena_bytes, 1):
            label = str(row.get("layer", row["name"])).split(" (")[0]
            if row["kind"] in ("state", "weight", "scratch"):
                label += f" {names.role(str(row['name']))}"  # which of the layer's buffers: v, i, weight...
            ax.text(start + 0.05, offset + size / 2, label, fontsize=7, va="center", clip_on=True)
    # A budget far above the arena would flatten the plan into a sliver: keep the plan readable, say where it is.
    budget_on_chart = budget is not None and budget <= 1.5 * arena_bytes
    top = max(arena_bytes, budget if budget_on_chart else 0) * 1.08 or 1
    ax.axhline(arena_bytes, color="black", lw=1, ls="-", label=f"arena {arena_bytes} B")
    ax.axhline(lower_bound, color="grey", lw=1, ls=":", label=f"lower bound {lower_bound} B")
    if budget is not None:
        where = "" if budget_on_chart else f" (above the chart, {budget / max(arena_bytes, 1):.1f}x the arena)"
        ax.axhline(budget if budget_on_chart else top, color="red", lw=1.5, ls="--", label=f"budget {budget} B{where}")
    ax.set_xlim(0, steps)
    ax.set_ylim(0, top)
    ax.set_xlabel("schedule position within one timestep (node index)")
    ax.set_ylabel("arena address (bytes)")
    ax.set_title(title)
    kinds = [Patch(facecolor=c, edgecolor="black", label=k) for k, c in KIND_COLOURS.items()]
    ax.legend(handles=kinds + ax.get_legend_handles_labels()[0], loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_memory_report(graph: Graph, folder: Path, title: str, budget: int | None) -> None:
    """memory.png, buffers.txt and plan.ir of a planned graph (`masic compile --report DIR`)."""
    from masic.ir.text import print_graph

    folder.mkdir(parents=True, exist_ok=True)
    rows = plan_rows(graph)
    plan = graph.plan
    draw_timeline(rows, folder / "memory.png", f"{title}: memory plan", plan.arena_bytes, plan.lower_bound, budget)
    (folder / "buffers.txt").write_text(buffer_table(rows) + "\n")
    (folder / "plan.ir").write_text(print_graph(graph))
