"""`package.module:factory` model specs, shared by the Norse and torch.export frontends."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

from masic.frontends.errors import FrontendError


def is_factory_spec(spec: str) -> bool:
    """True for `package.module:factory` (and not an existing file of that name)."""
    return bool(re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", spec)) and not Path(spec).exists()


def call_factory(spec: str) -> object:
    """Imports `package.module` (from the current directory too) and returns what `factory()` returns."""
    module_name, factory_name = spec.split(":")
    sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise FrontendError(f"cannot import {module_name} for {spec}: {err}") from None
    finally:
        sys.path.pop(0)
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise FrontendError(f"{spec}: {module_name} has no callable {factory_name}")
    return factory()
