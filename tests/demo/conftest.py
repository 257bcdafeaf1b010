"""Fixtures for the embedded-default tests: single-threaded torch, as for the model tests."""

from tests.models.conftest import single_thread  # noqa: F401  (autouse fixture)
