"""The masic command as a user meets it: emitted stages, and one-line errors with exit status 2 for bad input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from masic.frontends.norse import install_pickle_aliases
from norse.torch import LIFCell, SequentialState
from torch import nn

from masic import cli
from masic.limits import MAX_TIMESTEPS
from masic.passes import REGISTRY
from masic.units import parse_bytes
from tests.artifacts import masic_cli
from tests.filecheck import filecheck

FACTORY = "tests.norse_models:dense_model"


def _assert_one_line_error(result, *fragments: str) -> None:
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("masic: error: "), result.stderr
    assert result.stderr.strip().splitlines()[-1] == errors[0]  # progress lines may come first, nothing after
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_emit_ir_prints_the_imported_graph() -> None:
    result = masic_cli("compile", FACTORY, "--emit=ir")
    assert result.returncode == 0, result.stderr
    filecheck(
        result.stdout,
        """
        CHECK: graph @dense_model timesteps=16 {
        CHECK: %input = input() : f32[20]
        CHECK: %0 = dense(%input)
        CHECK: %1 = lif(%0)
        CHECK-NOT: dropout
        CHECK: %4 = li(%3)
        CHECK: output %4
        """,
    )


def test_emit_plan_and_print_after_all() -> None:
    result = masic_cli("compile", FACTORY, "--emit=plan", "--print-after-all", "--time-passes")
    assert result.returncode == 0, result.stderr
    filecheck(
        result.stdout,
        """
        CHECK: // ----- IR after infer-shapes -----
        CHECK: // ----- IR after fold-batchnorm -----
        CHECK: // ----- IR after assign-offsets -----
        CHECK: plan arena=
        CHECK: // ----- IR after check-budget -----
        CHECK: graph @dense_model
        CHECK: plan arena=
        """,
    )
    assert "pass assign-offsets" in result.stderr


@pytest.mark.slow
def test_emit_c_prints_one_call_per_node_or_fused_pair() -> None:
    """Each call's comment shows the IR it computes: the LIF packs its spikes in its own kernel (an epilogue cannot
    pack words), the last dense layer runs the LI as its epilogue, two lines."""
    result = masic_cli("compile", FACTORY, "--emit=c", "--target", "aarch64")
    assert result.returncode == 0, result.stderr
    filecheck(
        result.stdout,
        """
        CHECK: #include "masic_model.h"
        CHECK: int32_t masic_dense_2(uint32_t *x, float *w, float *b, float *v, float *i, float *out);
        CHECK: const masic_model_t masic_model = {
        CHECK: .input_shape = {20},
        CHECK: int masic_model_block(uint8_t *arena, int32_t nsteps, masic_stream_t *stream) {
        CHECK: /* %0 = dense(%input)
        CHECK-NEXT: if ((rc = masic_dense_0(
        CHECK: /* %1 = lif(%0)
        CHECK-SAME: : bits[48]
        CHECK: /* %3 = dense(%1)
        CHECK-NEXT: * then %4 = li(%3)
        CHECK: return 0;
        """,
    )


def test_a_text_file_named_model_pt_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_text("hello\n")
    _assert_one_line_error(masic_cli("compile", str(path)), "is not a PyTorch archive")


def test_a_missing_model_file_is_refused(tmp_path: Path) -> None:
    _assert_one_line_error(masic_cli("compile", str(tmp_path / "nope.pt")), "does not exist")


def test_an_unsupported_module_is_named(tmp_path: Path) -> None:
    install_pickle_aliases()
    torch.save(SequentialState(nn.Linear(3, 3), LIFCell(), nn.Tanh()), tmp_path / "m.pt")
    result = masic_cli("compile", str(tmp_path / "m.pt"), "--trust-pickle")
    _assert_one_line_error(result, "unsupported module model.2 (Tanh)")


def test_a_budget_below_the_minimum_states_the_smallest_that_works(tmp_path: Path) -> None:
    result = masic_cli("compile", FACTORY, "--budget", "1KB", "-o", str(tmp_path / "out"))
    _assert_one_line_error(result, "the budget 1000B (1000 bytes) is below the smallest that works", "use --budget")
    assert not (tmp_path / "out").exists()
    smallest = result.stderr.split("use --budget ")[-1].strip()
    fits = masic_cli("compile", FACTORY, "--budget", smallest, "--emit", "plan")
    assert fits.returncode == 0, fits.stderr


@pytest.mark.parametrize("budget", ["64XB", "lots", "-5MB", "0"])
def test_a_malformed_budget_is_refused(budget: str) -> None:
    _assert_one_line_error(masic_cli("compile", FACTORY, "--budget", budget), "--budget")


def test_unknown_target_lists_the_choices() -> None:
    _assert_one_line_error(masic_cli("compile", FACTORY, "--target", "riscv"), "unknown target 'riscv'", "aarch64")


def test_an_output_folder_with_other_files_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = masic_cli("compile", FACTORY, "-o", str(tmp_path))
    _assert_one_line_error(result, "holds files that are not a masic artifact")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_run_refuses_a_folder_that_is_not_an_artifact(tmp_path: Path) -> None:
    (tmp_path / "x.npy").write_bytes(b"")
    _assert_one_line_error(masic_cli("run", str(tmp_path), "--input", str(tmp_path / "x.npy")), "not a masic artifact")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("64MB", 64_000_000), ("64MiB", 64 << 20), ("1.5GB", 1_500_000_000), ("512KiB", 512 << 10), ("4096", 4096)],
)
def test_budget_units(text: str, expected: int) -> None:
    assert parse_bytes(text) == expected


def test_passes_lists_the_registry() -> None:
    result = masic_cli("passes")
    assert result.returncode == 0
    assert [line.split()[1] for line in result.stdout.splitlines()] == list(REGISTRY)


@pytest.mark.parametrize("value", ["0", "-3", "1000001", "2147483648", str(10**30), "1e3", "³", "9" * 5000])
def test_timesteps_outside_the_limit_are_refused(value: str) -> None:
    result = masic_cli("compile", FACTORY, "--timesteps", value, "--emit", "plan")
    _assert_one_line_error(result, "--timesteps", f"from 1 to {MAX_TIMESTEPS}")


def test_run_bounds_timesteps_as_compile_does(tmp_path: Path) -> None:
    result = masic_cli("run", str(tmp_path), "--input", "x.npy", "--timesteps", "2147483648")
    _assert_one_line_error(result, "--timesteps", f"from 1 to {MAX_TIMESTEPS}")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--min-timesteps", "4294967297"],
            f"--min-timesteps: expected a number of timesteps from 1 to {MAX_TIMESTEPS}",
        ),
        (["--min-timesteps", "17"], "--min-timesteps 17 exceeds --timesteps 16"),
        (["--exit-stable", "4294967297"], "--exit-stable"),
    ],
)
def test_min_timesteps_stays_within_the_timesteps(flags: list[str], message: str) -> None:
    result = masic_cli("compile", FACTORY, "--exit-margin", "1", *flags, "--emit", "plan")
    _assert_one_line_error(result, message)


def test_min_timesteps_may_equal_the_timesteps() -> None:
    result = masic_cli("compile", FACTORY, "--exit-margin", "1", "--min-timesteps", "16", "--emit", "plan")
    assert result.returncode == 0, result.stderr


def test_a_budget_of_hundreds_of_digits_is_refused() -> None:
    _assert_one_line_error(masic_cli("compile", FACTORY, "--budget", "9" * 400, "--emit", "plan"), "--budget")


def test_a_drawing_must_be_a_png(tmp_path: Path) -> None:
    _assert_one_line_error(masic_cli("inspect", str(tmp_path), "--png", "plan.foo"), "ending in .png")


@pytest.mark.parametrize("kind", ["not-utf8", "fifo", "folder"])
def test_plan_memory_refuses_files_it_cannot_read_as_text(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "problem.csv"
    if kind == "not-utf8":
        path.write_bytes(b"id,lower,upper,size\n1,0,2,\xff\n")
    elif kind == "fifo":
        os.mkfifo(path)  # no writer: reading would block forever
    else:
        path.mkdir()
    expected = {"not-utf8": "not UTF-8 text (byte 26 is 0xff)", "fifo": "not a regular file", "folder": "a folder"}
    _assert_one_line_error(masic_cli("plan-memory", str(path)), f"cannot read {path}", expected[kind])


@pytest.mark.parametrize(
    ("error", "shown"),
    [(RuntimeError("boom\nmore detail"), "RuntimeError: boom"), (MemoryError(), "MemoryError")],
)
def test_an_unexpected_exception_is_one_line_with_status_70(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], error: Exception, shown: str
) -> None:
    def fail(args: object) -> int:
        raise error

    monkeypatch.setattr(cli, "cmd_passes", fail)
    monkeypatch.delenv("MASIC_DEBUG", raising=False)
    assert cli.main(["passes"]) == 70
    assert capsys.readouterr().err.splitlines() == [
        f"masic: internal error: {shown}; please report (MASIC_DEBUG=1 shows the traceback)"
    ]
    monkeypatch.setenv("MASIC_DEBUG", "1")
    assert cli.main(["passes"]) == 70
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and err.splitlines()[-1].startswith("masic: internal error: ")
