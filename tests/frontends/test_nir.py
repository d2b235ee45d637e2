"""NIR frontend: third-party graphs from ../shared/models/nir (never copied into the repository) against their
golden trace and an independent simulation (tests/nir_reference.py), graphs of every supported node type, and the
refusal of broken or hostile files."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import h5py
import nir
import numpy as np
import pytest
from masic.frontends.errors import FrontendError
from masic.frontends.nir import import_nir

from masic.ir.graph import Graph
from masic.ir.interpret import run
from tests.artifacts import compile_graph, compile_spec, masic_cli, run_artifact
from tests.nir_reference import NIRReference
from tests.pipelines import planned

MODELS = Path(__file__).resolve().parents[2] / ".." / "shared" / "models" / "nir"
BAD = {
    "pickled_graph.nir": "is a ZIP archive (such as a torch.save pickle); a NIR file is HDF5",
    "pre_1_0_conv_without_input_shape.nir": "node '0' (Conv2d) in the graph has no input_shape (the pre-1.0 NIR",
    "dangling_edge_subgraph.nir": "an edge in subgraph 'lif1' names node 'lif', which does not exist",
    "truncated_export.nir": "the graph has no edges (a truncated or incomplete export)",
}
# graph -> (dt, per-sample input shape, timesteps): the CNN is Sinabs' discrete-time IF network (dt = 1 step);
# the reservoir's LIF (tau = 20 ms) needs steps of 1 ms to spike within a short test.
SHARED = {"cnn_sinabs": (1.0, (2, 34, 34), 16), "feedback_graph": (1e-3, (3,), 32)}


def _golden() -> np.ndarray:
    """lif_norse.csv: columns input, v, z; the values are float32 printed as shortest decimal strings."""
    return np.loadtxt(MODELS / "lif_norse.csv", delimiter=",", dtype=np.float32)


def _membrane(graph: Graph) -> Graph:
    """The same graph with the LIF node outputting its membrane (`probe`) instead of its spikes."""
    return graph.with_nodes([n.with_attrs(probe="v") if n.op == "lif_box" else n for n in graph.nodes])


def _spikes(shape: tuple[int, ...], timesteps: int, rate: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((timesteps, *shape)) < rate).astype(np.float32)


def _reference(path: Path, dt: float, x: np.ndarray) -> np.ndarray:
    return NIRReference(nir.read(path, type_check=False), dt).run(x)


def test_lif_norse_reproduces_the_golden_trace_bit_for_bit() -> None:
    golden = _golden()
    graph = import_nir(MODELS / "lif_norse.nir", 1e-4, timesteps=len(golden))
    x = golden[:, :1]
    z, v = run(graph, x)[:, 0], run(_membrane(graph), x)[:, 0]
    np.testing.assert_array_equal(z, golden[:, 2])
    assert np.array_equal(v.view(np.uint32), golden[:, 1].view(np.uint32)), "membrane differs in some bit"
    assert z.sum() == 4 and np.count_nonzero(v) > 500


@pytest.mark.parametrize("name", SHARED)
def test_shared_graphs_match_the_reference_simulation(name: str) -> None:
    dt, shape, timesteps = SHARED[name]
    x = _spikes(shape, timesteps, 0.3)
    graph = import_nir(MODELS / f"{name}.nir", dt, timesteps)
    expected = _reference(MODELS / f"{name}.nir", dt, x)
    plan = planned(graph)
    for got in (run(graph, x), run(plan, x, simulate_plan=True)):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    if name == "cnn_sinabs":
        assert expected.sum() >= 3, "the input must make the network spike"
    else:  # the output is the input plus a readout of the reservoir, which its feedback loop keeps firing
        assert np.abs(expected - x).max() > 1e-3


def test_a_back_edge_becomes_a_delay_before_its_source() -> None:
    graph = import_nir(MODELS / "feedback_graph.nir", 1e-3)
    (delay,) = [n for n in graph.nodes if n.op == "delay"]
    order = [n.name for n in graph.nodes]
    assert delay.attr("source") == "feedback_weights"
    assert order.index(delay.name) < order.index("feedback_ir") < order.index("feedback_weights")
    assert graph.node("feedback_ir").inputs == (delay.name,)
    output = graph.node(graph.output)
    assert output.op == "add" and set(output.inputs) == {"input", "output_probe_conn_weights"}


def _scalars(**values: float) -> dict[str, np.ndarray]:
    """Parameters of one value each (written as arrays of one element, turned into scalars by `_make_scalar`)."""
    return {k: np.array([v], np.float32) for k, v in values.items()}


def _make_scalar(path: Path, node: str) -> None:
    """Rewrites every one-element parameter of `node` as a 0-d dataset: NIR's writer cannot write scalars, but
    exporters did (../shared/models/nir/bad/truncated_export.nir has them)."""
    with h5py.File(path, "r+") as f:
        group = f[f"node/nodes/{node}"]
        for key in [k for k in group if k != "type" and group[k].shape == (1,)]:
            value = group[key][0]
            del group[key]
            group[key] = value


def _cuba(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "tau_syn": rng.uniform(4e-3, 6e-3, n),
        "tau_mem": rng.uniform(8e-3, 2e-2, n),
        "r": np.full(n, 1.5),
        "v_leak": np.zeros(n),
        "v_threshold": rng.uniform(0.3, 0.6, n),
        "w_in": np.full(n, 2.0),
    }


def _every_node_type(path: Path) -> Path:
    """Two NIR graphs in one file's worth of nodes: convolutions, pooling, flatten, every neuron kind with scalar
    and per-neuron parameters, Scale, Threshold, a Delay of 0, 1 and 2 steps, a nested recurrent subgraph, and
    two edges into one node (summed)."""
    rng = np.random.default_rng(5)
    n = 3 * 6
    rnn = nir.NIRGraph(
        nodes={
            "input": nir.Input(np.array([n])),
            "lif": nir.CubaLIF(**_cuba(n, 1)),
            "lin": nir.Linear(rng.normal(0, 0.3, (n, n))),
            "output": nir.Output(np.array([n])),
        },
        edges=[("input", "lif"), ("lif", "lin"), ("lin", "lif"), ("lif", "output")],
        type_check=False,
    )
    nodes = {
        "input": nir.Input(np.array([2, 6, 6])),
        "conv": nir.Conv2d((6, 6), rng.normal(0, 0.6, (4, 2, 3, 3)), 1, 1, 1, 1, rng.normal(0, 0.1, 4)),
        "if": nir.IF(**_scalars(r=1.0, v_threshold=1.0, v_reset=0.0)),
        "sum": nir.SumPool2d(np.array([2, 2]), np.array([2, 2]), np.array([0, 0])),
        "avg": nir.AvgPool2d(np.array([2, 2]), np.array([1, 1]), np.array([1, 1])),
        "flat": nir.Flatten({"input": np.array([4, 4, 4])}, 1, 2),
        "conv1d": nir.Conv1d(16, rng.normal(0, 0.5, (3, 4, 3)), 3, 1, 1, 1, np.zeros(3)),
        "flat2": nir.Flatten({"input": np.array([3, 6])}, 0, -1),
        "scale": nir.Scale(rng.uniform(0.5, 2.0, n)),
        "delay": nir.Delay(np.tile([0.0, 1e-3, 2e-3], n // 3)),
        "integrator": nir.I(r=np.full(n, 0.5)),
        "threshold": nir.Threshold(np.full(n, 0.8)),
        "rnn": rnn,
        "lif": nir.LIF(**_scalars(tau=5e-3, r=2.0, v_leak=0.1, v_threshold=0.5, v_reset=-0.1)),
        "readout": nir.Affine(rng.normal(0, 0.5, (5, n)), rng.normal(0, 0.1, 5)),
        "cubali": nir.CubaLI(**_scalars(tau_syn=5e-3, tau_mem=1e-2, r=1.5, v_leak=0.0, w_in=2.0)),
        "li": nir.LI(tau=np.full(5, 2e-2), r=np.ones(5), v_leak=np.zeros(5)),
        "output": nir.Output(np.array([5])),
    }
    edges = [
        ("input", "conv"),
        ("conv", "if"),
        ("if", "sum"),
        ("sum", "avg"),
        ("avg", "flat"),
        ("flat", "conv1d"),
        ("conv1d", "flat2"),
        ("flat2", "scale"),
        ("scale", "delay"),
        ("delay", "integrator"),
        ("integrator", "threshold"),
        ("threshold", "rnn"),
        ("rnn", "lif"),
        ("lif", "readout"),
        ("readout", "cubali"),
        ("cubali", "li"),
        ("readout", "li"),
        ("li", "output"),
    ]
    nir.write(path, nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    _make_scalar(path, "lif")
    _make_scalar(path, "if")
    return path


def test_every_node_type_matches_the_reference_simulation(tmp_path: Path) -> None:
    path = _every_node_type(tmp_path / "all.nir")
    x = _spikes((2, 6, 6), 24, 0.5)
    graph = import_nir(path, 1e-3, 24)
    ops = {n.op for n in graph.nodes}
    assert {"conv2d", "reshape", "sumpool2d", "avgpool2d", "scale", "delay", "threshold", "lif_box"} <= ops
    assert {"iaf", "li_box", "add", "dense", "flatten"} <= ops
    expected = _reference(path, 1e-3, x)
    np.testing.assert_allclose(run(graph, x), expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    assert np.abs(expected).max() > 0.05, "spikes must reach the readout"


def test_scalar_parameters_are_broadcast(tmp_path: Path) -> None:
    graph = import_nir(_every_node_type(tmp_path / "all.nir"), 1e-3)
    lif = graph.node("lif")
    assert lif.attr("v_th") == 0.5 and lif.attr("v_reset") == np.float32(-0.1) and lif.type.shape == (18,)
    assert graph.node("lif.r").attr("factor") == 2.0


def test_discretisation_coefficients() -> None:
    """dt/tau is folded in float32 as Norse folds dt * tau_mem_inv; r = 1 adds no node."""
    graph = import_nir(MODELS / "lif_norse.nir", 1e-4)
    (lif,) = [n for n in graph.nodes if n.op == "lif_box"]
    tau = np.float32(2.5e-3)
    assert lif.attr("dt_tau_mem") == np.float32(1e-4) * (np.float32(1) / tau)
    assert [n.op for n in graph.nodes] == ["input", "dense", "lif_box"]


def test_delays_must_be_whole_steps(tmp_path: Path) -> None:
    path = _every_node_type(tmp_path / "all.nir")
    with pytest.raises(FrontendError, match=r"NIR node 'delay' \(Delay\): delays .* are not whole steps of dt=0.0004"):
        import_nir(path, 4e-4)


@pytest.mark.parametrize("name", BAD)
def test_bad_files_are_refused_with_their_cause(name: str) -> None:
    with pytest.raises(FrontendError, match=re.escape(BAD[name])):
        import_nir(MODELS / "bad" / name, 1e-4)


def test_a_pickle_is_never_unpickled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    import torch

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    with pytest.raises(FrontendError, match="ZIP archive"):
        import_nir(MODELS / "bad" / "pickled_graph.nir", 1e-4)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"hello\n", "is not an HDF5 file"),
        (b"\x89HDF\r\n\x1a\n" + b"\0" * 100, "cannot read"),
    ],
)
def test_files_that_are_not_nir_are_refused(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "model.nir"
    path.write_bytes(content)
    with pytest.raises(FrontendError, match=message):
        import_nir(path, 1e-4)


def test_unsupported_node_types_and_missing_dt_are_named(tmp_path: Path) -> None:
    path = tmp_path / "copy.nir"
    shutil.copy(MODELS / "lif_norse.nir", path)
    with h5py.File(path, "r+") as f:
        del f["node/nodes/1/type"]
        f["node/nodes/1/type"] = b"Izhikevich"
    with pytest.raises(FrontendError, match=r"unsupported NIR node '1' of type Izhikevich"):
        import_nir(path, 1e-4)
    with pytest.raises(FrontendError, match="store no time step; pass --dt"):
        import_nir(MODELS / "lif_norse.nir", None)


@pytest.mark.parametrize("dt", [0.0, -1e-4, float("nan"), float("inf")])
def test_the_time_step_must_be_positive_and_finite(dt: float) -> None:
    with pytest.raises(FrontendError, match="--dt must be positive and finite"):
        import_nir(MODELS / "lif_norse.nir", dt)


@pytest.mark.parametrize("name", BAD)
def test_the_cli_refuses_bad_files_in_one_line(name: str) -> None:
    result = masic_cli("compile", str(MODELS / "bad" / name), "--dt", "1e-4")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("masic: error: ")]
    assert len(errors) == 1 and BAD[name].split(" (")[0] in errors[0] and "Traceback" not in result.stderr


def test_the_cli_needs_dt_for_nir() -> None:
    result = masic_cli("compile", str(MODELS / "lif_norse.nir"), "--emit", "ir")
    assert result.returncode == 2 and "pass --dt" in result.stderr.splitlines()[-1]


@pytest.mark.slow
@pytest.mark.parametrize("target", ["x86_64", "aarch64"])
def test_compiled_lif_norse_reproduces_the_golden_trace(target: str, tmp_path: Path) -> None:
    golden = _golden()
    graph = import_nir(MODELS / "lif_norse.nir", 1e-4, timesteps=len(golden))
    x = golden[:, :1]
    spikes = compile_graph(graph, target, tmp_path / "z")
    membrane = compile_graph(_membrane(graph), target, tmp_path / "v")
    (_, z), (_, v) = run_artifact(spikes, x, tmp_path), run_artifact(membrane, x, tmp_path)
    np.testing.assert_array_equal(z[:, 0], golden[:, 2])
    assert np.array_equal(v[:, 0].view(np.uint32), golden[:, 1].view(np.uint32)), "membrane differs in some bit"


@pytest.mark.slow
@pytest.mark.parametrize("name", SHARED)
def test_compiled_shared_graphs_match_the_reference_simulation(name: str, tmp_path: Path) -> None:
    dt, shape, timesteps = SHARED[name]
    path = MODELS / f"{name}.nir"
    out = compile_spec(str(path), "x86_64", tmp_path, "--dt", str(dt), "--timesteps", str(timesteps))
    x = _spikes(shape, timesteps, 0.3, seed=1)
    result, outputs = run_artifact(out, x, tmp_path)
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(outputs, _reference(path, dt, x), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_compiled_graph_of_every_node_type_matches_the_interpreter(tmp_path: Path) -> None:
    path = _every_node_type(tmp_path / "all.nir")
    out = compile_spec(str(path), "x86_64", tmp_path, "--dt", "1e-3", "--timesteps", "24")
    x = _spikes((2, 6, 6), 24, 0.5, seed=2)
    result, outputs = run_artifact(out, x, tmp_path)
    assert result.returncode == 0, result.stderr
    expected = run(import_nir(path, 1e-3, 24), x)
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
