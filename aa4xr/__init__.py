"""aa4xr: the CRCNS AA4 dataset as one lazy, labelled xarray Dataset.

>>> import aa4xr
>>> ds = aa4xr.open_aa4()          # the built-in synthetic sample
>>> ds.spike_count.dims
('stim', 'neuron', 'trial', 'time')
"""

__version__ = "0.1.0"

from . import accessor  # noqa: E402,F401  (registers ds.aa4)
from .analysis import (  # noqa: E402
    coverage,
    drop_empty,
    mask,
    psth,
    reliability,
    response_strength,
    smooth,
    to_frame,
    trial_rates,
)
from .dataset import index_coords, open_aa4  # noqa: E402
from .fetch import CRCNSDownloader, FetchError, fetch_aa4  # noqa: E402
from .store import open_spike_times, trial_spike_times  # noqa: E402
from .synthetic import sample_corpus, write_corpus  # noqa: E402

__all__ = [
    "__version__",
    "open_aa4",
    "index_coords",
    "psth",
    "smooth",
    "mask",
    "coverage",
    "drop_empty",
    "trial_rates",
    "to_frame",
    "response_strength",
    "reliability",
    "open_spike_times",
    "trial_spike_times",
    "sample_corpus",
    "fetch_aa4",
    "CRCNSDownloader",
    "FetchError",
    "write_corpus",
]


def __getattr__(name: str):
    """``aa4xr.plot`` on first use, so ``import aa4xr`` does not import matplotlib."""
    if name == "plot":
        import importlib

        return importlib.import_module(".plot", __name__)
    raise AttributeError(f"module 'aa4xr' has no attribute {name!r}")
