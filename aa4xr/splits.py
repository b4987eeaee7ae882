"""Train / validation / test splits of the stimuli, by md5.

A model of auditory responses is judged on sounds it never trained on, so
the unit of a split is the stimulus: every neuron's responses to one sound
fall in the same part.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import xarray as xr

#: Names of the parts when ``fractions`` is a sequence of three.
PARTS = ("train", "validation", "test")


def _parts(fractions: Mapping[str, float] | Sequence[float]) -> dict[str, float]:
    if isinstance(fractions, Mapping):
        parts = {str(k): float(v) for k, v in fractions.items()}
    else:
        values = [float(v) for v in fractions]
        if len(values) != len(PARTS):
            raise ValueError(f"fractions={tuple(fractions)!r}: expected {len(PARTS)} values for {PARTS}, "
                             "or a mapping {name: fraction}")
        parts = dict(zip(PARTS, values))
    if not parts or any(not np.isfinite(v) or v < 0 for v in parts.values()) \
            or not np.isclose(sum(parts.values()), 1.0):
        raise ValueError(f"fractions {parts}: expected non-negative fractions summing to 1")
    return parts


def split_stimuli(ds: xr.Dataset, fractions: Mapping[str, float] | Sequence[float] = (0.8, 0.1, 0.1), *,
                  stratify: Hashable | None = None, seed: int = 0) -> dict[str, list[str]]:
    """Split the Dataset's stimuli into train / validation / test, by md5.

    The stimuli are shuffled with ``seed`` (the same md5s give the same
    split whatever their order in ``ds``) and cut in the given proportions,
    rounded to whole stimuli. With ``stratify``, each value of that stimulus
    coordinate (e.g. every ``stim_type``) is split in those proportions on
    its own, so each part holds songs, calls and noises alike.

    Parameters
    ----------
    ds : xarray.Dataset
        From :func:`aa4xr.open_aa4`, or a selection of it (e.g. after
        ``ds.aa4.drop_empty()``, to split only stimuli with data).
    fractions : sequence of 3 floats, or mapping
        Proportions of ``("train", "validation", "test")``, or
        ``{name: fraction}``; non-negative, summing to 1.
    stratify : {None, "stim_type", "call_type"} or any coordinate along ``stim``
        Split each of its values separately (``call_type`` is ``""`` for
        songs and noises, so they form one stratum).
    seed : int
        Seed of the shuffle.

    Returns
    -------
    dict of str to list of str
        ``{part: md5s}``, the md5s of each part in Dataset order; the parts
        are disjoint and together hold every stimulus of ``ds``.

    Examples
    --------
    >>> import aa4xr
    >>> ds = aa4xr.open_aa4()
    >>> split = aa4xr.split_stimuli(ds, (0.6, 0.2, 0.2), stratify="stim_type", seed=1)
    >>> {part: len(md5s) for part, md5s in split.items()}
    {'train': 9, 'validation': 2, 'test': 3}
    >>> train = ds.sel(stim=split["train"])
    """
    if not isinstance(ds, xr.Dataset) or "stim" not in ds.dims:
        raise TypeError(f"split_stimuli() takes the xarray.Dataset of aa4xr.open_aa4(), got {type(ds).__name__}")
    parts = _parts(fractions)
    md5 = np.asarray(ds["stim"].values, dtype=str)
    if stratify is None:
        strata = np.zeros(md5.size, dtype=int)
    elif stratify in ds.coords and ds[stratify].dims == ("stim",):
        strata = np.unique(np.asarray(ds[stratify].values, dtype=str), return_inverse=True)[1]
    else:
        along = sorted(str(k) for k, c in ds.coords.items() if c.dims == ("stim",) and k != "stim")
        raise ValueError(f"stratify={stratify!r}: expected None or a coordinate along stim, one of {along}")
    rng = np.random.default_rng(seed)
    part_of = np.empty(md5.size, dtype=int)
    cumulative = np.cumsum(list(parts.values()))
    for stratum in np.unique(strata):
        members = np.flatnonzero(strata == stratum)
        members = rng.permutation(members[np.argsort(md5[members], kind="stable")])
        bounds = np.round(cumulative * members.size).astype(int)
        part_of[members] = np.searchsorted(bounds, np.arange(members.size), side="right")
    return {name: md5[part_of == k].tolist() for k, name in enumerate(parts)}
