"""The ``ds.aa4`` accessor: one line per public function of :mod:`aa4xr.analysis`.

Importing this module registers the accessor on every ``xarray.Dataset``
(``import aa4xr`` does it). ``ds.aa4.<name>(...)`` is ``aa4xr.<name>(ds, ...)``.

Examples
--------
>>> import aa4xr
>>> ds = aa4xr.open_aa4(pre=0.1)
>>> rate = ds.sel(stim_type="song").aa4.drop_empty().aa4.psth(smooth_ms=21.0)
"""

from __future__ import annotations

import pandas as pd
import xarray as xr


def _analysis():
    """:mod:`aa4xr.analysis`, imported on first use (it imports scipy)."""
    from . import analysis

    return analysis


@xr.register_dataset_accessor("aa4")
class AA4Accessor:
    """Analysis verbs of :mod:`aa4xr.analysis` on an AA4 Dataset."""

    def __init__(self, ds: xr.Dataset):
        self._ds = ds

    def psth(self, smooth_ms: float | None = 21.0, window="hann", units: str = "rate") -> xr.DataArray:
        """Call :func:`aa4xr.analysis.psth` on this Dataset."""
        return _analysis().psth(self._ds, smooth_ms, window, units)

    def mask(self) -> xr.DataArray:
        """Call :func:`aa4xr.analysis.mask` on this Dataset."""
        return _analysis().mask(self._ds)

    def coverage(self) -> xr.Dataset:
        """Call :func:`aa4xr.analysis.coverage` on this Dataset."""
        return _analysis().coverage(self._ds)

    def drop_empty(self) -> xr.Dataset:
        """Call :func:`aa4xr.analysis.drop_empty` on this Dataset."""
        return _analysis().drop_empty(self._ds)

    def trial_rates(self, baseline: str = "auto") -> xr.Dataset:
        """Call :func:`aa4xr.analysis.trial_rates` on this Dataset."""
        return _analysis().trial_rates(self._ds, baseline)

    def to_frame(self, baseline: str = "auto") -> pd.DataFrame:
        """Call :func:`aa4xr.analysis.to_frame` on this Dataset."""
        return _analysis().to_frame(self._ds, baseline)

    def response_strength(self, baseline: str = "auto") -> xr.Dataset:
        """Call :func:`aa4xr.analysis.response_strength` on this Dataset."""
        return _analysis().response_strength(self._ds, baseline)

    def reliability(self, smooth_ms: float | None = 21.0, window="hann") -> xr.Dataset:
        """Call :func:`aa4xr.analysis.reliability` on this Dataset."""
        return _analysis().reliability(self._ds, smooth_ms, window)
