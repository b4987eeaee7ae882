"""Every pytest run (tests/ and the doctests of aa4xr/) gets a private cache, removed at the end."""

from __future__ import annotations

import os
import shutil
import tempfile


def pytest_configure(config):
    """Never touch the user's cache: every test session gets its own, removed at the end."""
    config._aa4xr_cache = tempfile.mkdtemp(prefix="aa4xr-test-cache-")
    os.environ["AA4XR_CACHE_DIR"] = config._aa4xr_cache


def pytest_unconfigure(config):
    shutil.rmtree(getattr(config, "_aa4xr_cache", ""), ignore_errors=True)
