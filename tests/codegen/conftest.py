"""Fixtures shared by the kernel tests (test_kernels.py, test_kernels_compressed.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def fresh_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Build from scratch (an empty object cache), so the tests exercise TVM, not the cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MASIC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield
