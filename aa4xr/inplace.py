"""A dask array that, computed whole, is filled in one array in place.

``ds.spike_count.load()`` through dask holds every chunk and then their
concatenation: about twice the dense size at the peak. :func:`in_place`
gives the ``spike_count`` of :func:`aa4xr.open_aa4` a compute of its own:
when the whole array is asked for (``.load()``, ``.compute()``,
``.values``), one task bins it into one array (its stimuli a block at a
time, see :meth:`aa4xr.backend.Layout.bin`) and each chunk is a view of
that array, which the result then is. Anything made from the array
(selections, reductions, arithmetic) is a plain dask array and streams
chunk by chunk as usual.

The result is the same either way: where the chunks do not come back as
views of one array (a ``dask.distributed`` cluster ships each chunk
alone, ``optimize_graph=False`` skips the rewrite), they are concatenated,
as dask does.

Examples
--------
>>> import aa4xr
>>> ds = aa4xr.open_aa4(dt=0.01)
>>> counts = ds.spike_count.values        # one task, one array filled in place
>>> "__dask_optimize__" in vars(ds.spike_count.isel(neuron=[0]).data)  # a selection: plain dask
False
"""

from __future__ import annotations

import operator

import dask.array as da
import numpy as np
from dask._task_spec import Task, TaskRef
from dask.array.core import finalize
from dask.core import flatten

__all__ = ["in_place"]


def in_place(data: da.Array, source) -> da.Array:
    """``data`` (a dask array over all of ``source``), computed whole into one array filled in place.

    A plain :class:`dask.array.Array` over the same graph (xarray accepts
    no other type beside dask's own), carrying its own ``__dask_optimize__``
    and ``__dask_postcompute__`` (the dask collection protocol; instance
    attributes take precedence over the class's): the optimisation makes
    one task that reads ``source`` whole and chunks that are views of its
    array, and the finalisation returns that array. Copies, pickles and
    anything computed from it are ordinary dask arrays.

    Parameters
    ----------
    data : dask.array.Array
        The dask array xarray made of ``source``: the same graph is kept.
    source
        The backend array, e.g. :class:`aa4xr.backend.SpikeCountArray`;
        ``source._getitem`` of full slices must give all of ``data`` as an
        array of its own (not a view).
    """
    out = da.Array(data.dask, data.name, data.chunks, meta=data._meta)
    out.__dask_optimize__ = _Rewrite(source, data.name, data.chunks)
    out.__dask_postcompute__ = _Finalize(out.shape, out.npartitions)
    return out


class _Rewrite:
    """The low-level optimisation of :func:`in_place`'s compute: one task, chunks as views of its array."""

    def __init__(self, source, name: str, chunks: tuple[tuple[int, ...], ...]):
        self.source, self.name, self.chunks = source, name, chunks

    def __dask_tokenize__(self):
        return ("aa4xr-in-place", self.name)

    def __call__(self, dsk, keys, **kwargs) -> dict:
        whole = f"in-place-{self.name}"
        offsets = [np.cumsum((0, *c)).tolist() for c in self.chunks]
        graph = {whole: Task(whole, _read_whole, self.source)}
        for key, task in dict(dsk).items():
            if isinstance(key, tuple) and key[0] == self.name:
                where = tuple(slice(o[i], o[i + 1]) for o, i in zip(offsets, key[1:]))
                graph[key] = Task(key, operator.getitem, TaskRef(whole), where)
            elif not (isinstance(key, str) and key.startswith("original-") and self.name in key):
                graph[key] = task  # the finalize task (the source's own node is no longer read)
        return graph


def _read_whole(source) -> np.ndarray:
    return source._getitem((slice(None),) * len(source.shape))


class _Finalize:
    """``__dask_postcompute__`` of :func:`in_place`: :func:`_assembled` and its arguments."""

    def __init__(self, shape: tuple[int, ...], n_chunks: int):
        self.shape, self.n_chunks = shape, n_chunks

    def __call__(self):
        return _assembled, (self.shape, self.n_chunks)


def _assembled(results, shape: tuple[int, ...], n_chunks: int) -> np.ndarray:
    """The one array every chunk is a view of, else the chunks concatenated (dask's own finalize)."""
    leaves = list(flatten(results)) if isinstance(results, list) else [results]
    base = getattr(leaves[0], "base", None) if leaves else None
    if (isinstance(base, np.ndarray) and base.shape == shape and len(leaves) == n_chunks
            and all(isinstance(r, np.ndarray) and r.base is base for r in leaves)):
        return base
    return finalize(results)
