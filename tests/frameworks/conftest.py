"""The end-to-end tests' `target` fixture (x86_64 and aarch64, each with its toolchain), for the compiled zoos."""

from tests.e2e.conftest import target  # noqa: F401
