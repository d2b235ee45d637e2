"""Which frontend reads a model, from the model spec `masic compile` gets.

- `*.nir`: the NIR frontend (`masic.frontends.nir`); needs `dt`.
- `*.pt2`: the torch.export frontend (`masic.frontends.export`).
- `package.module:factory`: by what the factory returns: a model of snnTorch, SpikingJelly or Sinabs modules
  (`masic.frontends.frameworks`), a Norse model (`masic.frontends.norse`), a `torch.export.ExportedProgram`, or
  `(module, example_inputs)` of a plain PyTorch step module (exported here).
- any other file: a `torch.save` archive of such a model, read with the safe loader (`masic.frontends.safe_pickle`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from masic.frontends.errors import FrontendError
from masic.frontends.factory import call_factory, is_factory_spec

from masic.ir.graph import Graph


@dataclass(frozen=True)
class ImportOptions:
    """`input_shape` per sample (no batch); `dt` in seconds, for NIR graphs only; `trust_pickle` for .pt files."""

    input_shape: tuple[int, ...] | None = None
    timesteps: int = 16
    dt: float | None = None
    name: str | None = None
    trust_pickle: bool = False


def model_name(spec: str) -> str:
    """The default name of a model: the file's stem, or the factory's name."""
    return Path(spec.split(":")[-1]).stem.replace("-", "_")


def import_model(spec: str, options: ImportOptions) -> Graph:
    """The IR of one timestep of the model `spec`; a refusal names the spec (a node's own error names only the
    node)."""
    try:
        return _import_model(spec, options)
    except FrontendError as err:
        if spec in str(err):
            raise
        raise FrontendError(f"{spec}: {err}") from None


def _import_model(spec: str, options: ImportOptions) -> Graph:
    name = options.name or model_name(spec)
    if spec.endswith(".nir") and not is_factory_spec(spec):
        from masic.frontends.nir import import_nir

        return import_nir(spec, options.dt, options.timesteps, name)
    if options.dt is not None:
        raise FrontendError("--dt applies to NIR graphs only; Norse and PyTorch models carry their own time step")
    if spec.endswith(".pt2") and not is_factory_spec(spec):
        from masic.frontends.export import import_export, load_export

        return import_export(load_export(spec), options.input_shape, options.timesteps, name)
    import torch
    from masic.frontends.export import export_module, import_export
    from masic.frontends.frameworks import framework_of, import_framework_model
    from masic.frontends.norse import import_norse, is_norse_model, load_model

    if not is_factory_spec(spec):
        model = load_model(spec, options.trust_pickle)
        if framework_of(model) is not None:
            return import_framework_model(model, options.input_shape, options.timesteps, name)
        return import_norse(model, options.input_shape, options.timesteps, name)
    made = call_factory(spec)
    if isinstance(made, torch.export.ExportedProgram):
        return import_export(made, options.input_shape, options.timesteps, name)
    if isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], torch.nn.Module):
        program = export_module(made[0], tuple(made[1]), spec)
        return import_export(program, options.input_shape, options.timesteps, name)
    if isinstance(made, torch.nn.Module) and framework_of(made) is not None:
        return import_framework_model(made, options.input_shape, options.timesteps, name)
    if isinstance(made, torch.nn.Module) and is_norse_model(made):
        return import_norse(made, options.input_shape, options.timesteps, name)
    if isinstance(made, torch.nn.Module):
        raise FrontendError(
            f"{spec} returned a {type(made).__qualname__}, which is no Norse, snnTorch, SpikingJelly or Sinabs model "
            "and not exported: for a plain "
            "PyTorch step module return (module, example_inputs) or a torch.export.ExportedProgram"
        )
    raise FrontendError(f"{spec} returned a {type(made).__name__}, not a model")
