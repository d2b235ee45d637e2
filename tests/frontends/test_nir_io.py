"""NIR graphs with several Input and Output nodes (packed into the graph's one input and output as ports, given to
and read from `masic run` as .npz files), against the independent reference simulation; and the time step a
graph implies, suggested when `--dt` is missing and warned about when `--dt` contradicts it."""

from __future__ import annotations

import warnings
from pathlib import Path

import nir
import numpy as np
import pytest
from masic.frontends.errors import FrontendError, FrontendWarning
from masic.frontends.nir import import_nir

from masic.ir.graph import Port
from masic.ir.interpret import run
from masic.ir.ports import split
from masic.manifest import read_manifest
from tests.artifacts import compile_spec, masic_cli
from tests.nir_reference import NIRReference

MODELS = Path(__file__).resolve().parents[2] / ".." / "shared" / "models" / "nir"
STEPS, DT = 24, 1e-3


def _multi_io(path: Path) -> Path:
    """Inputs a (3) and b (2x2, flattened) into one LIF population whose spikes are output z and, through an
    Affine and an LI, output y; the LI feeds back into the LIF (a cycle reached from both inputs)."""
    rng = np.random.default_rng(0)
    f32 = np.float32

    def weights(*shape: int, low: float = 0.0) -> np.ndarray:
        return rng.uniform(low, 1.0, shape).astype(f32)

    lif = {"tau": np.full(6, 5e-3, f32), "r": np.full(6, 1.5, f32), "v_leak": np.zeros(6, f32)}
    nodes = {
        "a": nir.Input(input_type={"input": np.array([3])}),
        "b": nir.Input(input_type={"input": np.array([2, 2])}),
        "flat": nir.Flatten(start_dim=0, end_dim=-1, input_type={"input": np.array([2, 2])}),
        "wa": nir.Linear(weight=weights(6, 3)),
        "wb": nir.Affine(weight=weights(6, 4), bias=weights(6, low=-0.5)),
        "lif": nir.LIF(**lif, v_threshold=np.ones(6, f32), v_reset=np.zeros(6, f32)),
        "wy": nir.Affine(weight=weights(2, 6, low=-1.0), bias=np.zeros(2, f32)),
        "li": nir.LI(tau=np.full(2, 2e-2, f32), r=np.ones(2, f32), v_leak=np.zeros(2, f32)),
        "back": nir.Linear(weight=weights(6, 2, low=-1.0)),
        "z": nir.Output(output_type={"output": np.array([6])}),
        "y": nir.Output(output_type={"output": np.array([2])}),
    }
    edges = [("a", "wa"), ("b", "flat"), ("flat", "wb"), ("wa", "lif"), ("wb", "lif"), ("lif", "z"), ("lif", "wy")]
    edges += [("wy", "li"), ("li", "y"), ("li", "back"), ("back", "lif")]
    nir.write(path, nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    return path


def _inputs(steps: int = STEPS) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "a": rng.uniform(0, 0.5, (steps, 3)).astype(np.float32),
        "b": rng.uniform(0, 0.5, (steps, 2, 2)).astype(np.float32),
    }


def _reference(path: Path, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return NIRReference(nir.read(path, type_check=False), DT).run(x)


def test_several_inputs_and_outputs_match_the_reference(tmp_path: Path) -> None:
    path = _multi_io(tmp_path / "io.nir")
    graph = import_nir(path, DT, STEPS)
    assert graph.input_ports == (Port("a", (3,)), Port("b", (2, 2)))
    assert graph.output_ports == (Port("y", (2,)), Port("z", (6,)))  # the file's order (NIR writes them sorted)
    x = _inputs()
    expected, got = _reference(path, x), split(graph.output_ports, run(graph, x))
    assert 0 < expected["z"].mean() < 1, "the inputs must make the LIF spike, but not always"
    np.testing.assert_array_equal(got["z"], expected["z"])
    np.testing.assert_allclose(got["y"], expected["y"], rtol=1e-5, atol=1e-6)


def test_one_input_and_output_keep_their_names_and_no_ports() -> None:
    graph = import_nir(MODELS / "lif_norse.nir", 1e-4)
    assert (graph.inputs[0].name, graph.input_ports, graph.output_ports) == ("input", (), ())


@pytest.mark.parametrize(
    ("name", "dt", "reason"),
    [
        ("lif_norse", 1e-4, r"a tenth of its shortest time constant, tau=0.0025 s of NIR node '1'"),
        ("feedback_graph", 1e-3, r"tau=0.02 s of NIR node 'state'"),
        ("cnn_sinabs", 1.0, r"no time constant: discrete-time exports \(Sinabs, SpiNNaker2\) mean dt = 1"),
    ],
)
def test_a_missing_dt_is_suggested_from_the_graph(name: str, dt: float, reason: str) -> None:
    with pytest.raises(FrontendError, match=rf"pass --dt \(this one suggests --dt {dt:g}: .*{reason}"):
        import_nir(MODELS / f"{name}.nir", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FrontendWarning)
        import_nir(MODELS / f"{name}.nir", dt)  # the suggestion draws no warning


def _snntorch_style(path: Path, beta: float) -> Path:
    """snnTorch's export of Leaky neurons: tau = dt / (1 - beta) and r = tau / dt, with dt = 1e-4."""
    tau = np.full(4, 1e-4 / (1 - beta), np.float32)
    nodes = {
        "x": nir.Input(input_type={"input": np.array([4])}),
        "lif": nir.LIF(tau=tau, r=tau / 1e-4, v_leak=np.zeros(4), v_threshold=np.ones(4), v_reset=np.zeros(4)),
        "y": nir.Output(output_type={"output": np.array([4])}),
    }
    nir.write(path, nir.NIRGraph(nodes=nodes, edges=[("x", "lif"), ("lif", "y")], type_check=False))
    return path


def test_a_dt_folded_into_r_is_found(tmp_path: Path) -> None:
    path = _snntorch_style(tmp_path / "leaky.nir", beta=0.5)
    with pytest.raises(FrontendError, match=r"suggests --dt 0.0001: every neuron's tau / r is 0.0001"):
        import_nir(path, None)
    with pytest.warns(FrontendWarning, match=r"--dt 0.001 is not the graph's tau / r = 0.0001: each step scales"):
        import_nir(path, 1e-3)


@pytest.mark.parametrize(
    ("name", "dt", "warning"),
    [
        ("cnn_sinabs", 1e-4, r"NIR node '1' \(IF\) has no time constant .* assume --dt 1, and with 0.0001 they"),
        ("lif_norse", 1.0, r"--dt 1 is 400 times the time constant 0.0025 of NIR node '1': forward Euler overshoots"),
    ],
)
def test_a_contradicting_dt_is_warned_about_in_one_line(name: str, dt: float, warning: str) -> None:
    result = masic_cli("compile", str(MODELS / f"{name}.nir"), "--dt", str(dt), "--emit", "ir")
    assert result.returncode == 0
    warned = [line for line in result.stderr.splitlines() if line.startswith("masic: warning: ")]
    assert len(warned) == 1 and __import__("re").search(warning, warned[0]), result.stderr


def test_the_cli_suggests_dt_in_its_error() -> None:
    result = masic_cli("compile", str(MODELS / "cnn_sinabs.nir"), "--emit", "ir")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].endswith(
        "(this one suggests --dt 1: its neurons have no time constant: "
        "discrete-time exports (Sinabs, SpiNNaker2) mean dt = 1)"
    )


@pytest.mark.slow
@pytest.mark.parametrize("target", ["x86_64", "aarch64"])
def test_compiled_ports_run_from_npz_files(target: str, tmp_path: Path) -> None:
    """The artifact packs a and b into one input and y and z into one output; `masic run` packs and splits .npz
    files by the names the manifest keeps; refuses an .npz for an artifact of one input."""
    path = _multi_io(tmp_path / "io.nir")
    out = compile_spec(str(path), target, tmp_path, "--dt", str(DT), "--timesteps", str(STEPS))
    manifest = read_manifest(out)
    assert manifest.input_ports == (Port("a", (3,)), Port("b", (2, 2))) and manifest.input_shape == (7,)
    assert manifest.output_ports == (Port("y", (2,)), Port("z", (6,)))
    x = _inputs()
    np.savez(tmp_path / "x.npz", **x)
    result = masic_cli("run", str(out), "--input", str(tmp_path / "x.npz"), "--output", str(tmp_path / "y.npz"))
    assert result.returncode == 0, result.stderr
    expected = _reference(path, x)
    with np.load(tmp_path / "y.npz") as got:
        assert sorted(got.files) == ["y", "z"]
        np.testing.assert_array_equal(got["z"], expected["z"])
        np.testing.assert_allclose(got["y"], expected["y"], rtol=1e-5, atol=1e-6)
    inspected = masic_cli("inspect", str(out))
    assert "inputs     a[3], b[2, 2]" in inspected.stdout and "outputs    y[2], z[6]" in inspected.stdout
    single = compile_spec(str(MODELS / "lif_norse.nir"), target, tmp_path / "", "--dt", "1e-4")
    refused = masic_cli("run", str(single), "--input", str(tmp_path / "x.npz"))
    assert refused.returncode == 2 and "an .npz names the inputs of a model with several" in refused.stderr
