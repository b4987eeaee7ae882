"""``LabelIndex``: ``.sel`` on the label and number coordinates of ``stim`` or ``neuron``.

Coordinates such as ``stim_type``, ``animal`` or ``electrode`` repeat their
values along their dimension, so pandas' own index cannot look up a list of
them, and xarray allows one index per dimension in a ``.sel`` call. One
``LabelIndex`` holds all of a dimension's label coordinates and selects the
positions matching every label given: a value or a list of values, a slice
(numbers, both ends included) or a boolean mask. The dimension is always kept.

Examples
--------
>>> import xarray as xr
>>> ds = xr.Dataset(coords={"stim": ["a", "b", "c"], "stim_type": ("stim", ["song", "call", "song"]),
...                         "duration": ("stim", [1.0, 2.0, 3.0])})
>>> ds = ds.set_xindex(["stim_type", "duration"], LabelIndex)
>>> ds.sel(stim_type=["song", "call"], duration=slice(1.5, 3.0)).stim.values.tolist()
['b', 'c']
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import xarray as xr
from xarray.core.indexes import IndexSelResult

__all__ = ["LabelIndex"]


def _positions(name: Hashable, values: np.ndarray, label: Any) -> np.ndarray:
    """Bool mask of ``values`` selected by one label (value, list, slice or mask)."""
    if isinstance(label, slice):
        if label.step is not None:
            raise ValueError(f"sel({name}=slice(...)) takes no step, got {label.step!r}")
        if values.dtype.kind not in "iuf":
            raise TypeError(f"sel({name}=slice(...)) needs numbers; {name!r} holds {values.dtype}")
        keep = np.ones(values.size, bool)
        if label.start is not None:
            keep &= values >= label.start
        if label.stop is not None:
            keep &= values <= label.stop
        return keep
    wanted = np.asarray(label.values if isinstance(label, (xr.DataArray, xr.Variable)) else label)
    if wanted.dtype.kind == "b":
        if wanted.shape != values.shape:
            raise IndexError(f"boolean mask for {name!r} has shape {wanted.shape}, expected {values.shape}")
        return wanted
    wanted = wanted.ravel()
    missing = wanted[~np.isin(wanted, values)]
    if missing.size:
        raise KeyError(f"{name!r} holds no {missing.tolist()}; it holds {sorted(set(values.tolist()))}")
    return np.isin(values, wanted)


class LabelIndex(xr.Index):
    """All label coordinates of one dimension, selectable together by value, list, slice or mask.

    Parameters
    ----------
    values : dict of name -> 1-D ndarray
        The coordinates' values, all along ``dim``.
    dim : str
        Their dimension.
    """

    def __init__(self, values: Mapping[Hashable, np.ndarray], dim: Hashable):
        self.values = dict(values)
        self.dim = dim

    @classmethod
    def from_variables(cls, variables: Mapping[Any, xr.Variable], *, options: Mapping[str, Any]) -> LabelIndex:
        dims = {var.dims for var in variables.values()}
        if len(dims) != 1 or len(next(iter(dims))) != 1:
            raise ValueError(f"LabelIndex takes 1-D coordinates of one dimension, got dims {sorted(dims)}")
        return cls({name: np.asarray(var.values) for name, var in variables.items()}, next(iter(dims))[0])

    def create_variables(self, variables: Mapping[Any, xr.Variable] | None = None) -> dict[Hashable, xr.Variable]:
        variables = variables or {}
        out = {}
        for name, values in self.values.items():
            old = variables.get(name)
            out[name] = xr.Variable(self.dim, values, getattr(old, "attrs", None), getattr(old, "encoding", None))
        return out

    def isel(self, indexers: Mapping[Any, Any]) -> LabelIndex | None:
        indexer = indexers[self.dim]
        if isinstance(indexer, xr.Variable):
            if indexer.dims != (self.dim,):
                return None
            indexer = indexer.data
        if not isinstance(indexer, slice) and np.ndim(indexer) == 0:
            return None
        return type(self)({name: v[indexer] for name, v in self.values.items()}, self.dim)

    def sel(self, labels: dict[Any, Any], method=None, tolerance=None) -> IndexSelResult:
        if method is not None or tolerance is not None:
            raise ValueError(f"sel on {list(labels)} selects by value: method/tolerance are not supported")
        keep = np.ones(len(next(iter(self.values.values()))), bool)
        for name, label in labels.items():
            keep &= _positions(name, self.values[name], label)
        return IndexSelResult({self.dim: np.flatnonzero(keep)})

    def equals(self, other: xr.Index, *, exclude=None) -> bool:
        return (isinstance(other, LabelIndex) and other.dim == self.dim and other.values.keys() == self.values.keys()
                and all(np.array_equal(v, other.values[k], equal_nan=v.dtype.kind == "f")
                        for k, v in self.values.items()))

    @classmethod
    def concat(cls, indexes, dim: Hashable, positions=None) -> LabelIndex:
        indexes = list(indexes)
        values = {name: np.concatenate([ix.values[name] for ix in indexes]) for name in indexes[0].values}
        if positions is not None:
            values = {name: v[np.argsort(np.concatenate(positions))] for name, v in values.items()}
        return cls(values, dim)

    def rename(self, name_dict: Mapping[Any, Hashable], dims_dict: Mapping[Any, Hashable]) -> LabelIndex:
        return type(self)({name_dict.get(k, k): v for k, v in self.values.items()}, dims_dict.get(self.dim, self.dim))

    def _repr_inline_(self, max_width: int) -> str:
        return f"LabelIndex ({self.dim}: {', '.join(map(str, self.values))})"[:max_width]
