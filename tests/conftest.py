"""Shared fixtures: the synthetic sample corpus with its ground truth (the private cache: ../conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """The "sample" preset written into a temporary root, with its ground truth."""
    from aa4xr.synthetic import write_corpus

    return write_corpus(tmp_path_factory.mktemp("corpus"), "sample", seed=0, processes=1)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty cache for tests that count ingests."""
    monkeypatch.setenv("AA4XR_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


class ComputeForbidden(RuntimeError):
    pass


@pytest.fixture
def no_compute():
    """A context in which any dask computation fails the test (cf-xarray's raise_if_dask_computes)."""
    import dask

    def scheduler(dsk, keys, **kwargs):
        raise ComputeForbidden("dask computed where it should have stayed lazy")

    return dask.config.set(scheduler=scheduler)
