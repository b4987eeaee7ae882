"""aa4xr: the CRCNS AA4 dataset as one lazy, labelled xarray Dataset.

``import aa4xr`` registers the ``ds.aa4`` accessor and nothing heavier:
each public name is imported from its module on first use.

>>> import aa4xr
>>> ds = aa4xr.open_aa4()          # the built-in synthetic sample
>>> ds.spike_count.dims
('stim', 'neuron', 'trial', 'time')
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

from . import accessor  # noqa: E402,F401  (registers ds.aa4)

#: Public name -> the module defining it (imported on first use, see ``__getattr__``).
_LAZY = {
    **dict.fromkeys(("coverage", "drop_empty", "mask", "psth", "reliability", "response_strength", "smooth",
                     "to_frame", "trial_rates"), "analysis"),
    **dict.fromkeys(("index_coords", "open_aa4"), "dataset"),
    **dict.fromkeys(("CRCNSDownloader", "FetchError", "fetch_aa4"), "fetch"),
    "UnitFileError": "read",
    "check": "checks",
    "split_stimuli": "splits",
    **dict.fromkeys(("open_spike_times", "trial_spike_times"), "store"),
    **dict.fromkeys(("sample_corpus", "write_corpus"), "synthetic"),
}
_SUBMODULES = ("plot",)

__all__ = ["__version__", *_LAZY, *_SUBMODULES]


def __getattr__(name: str):
    """Import a public name's module on first use, so ``import aa4xr`` stays fast."""
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'aa4xr' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
