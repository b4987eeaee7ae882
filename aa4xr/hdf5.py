"""An AA4 unit file as a small tree: groups, their attributes and datasets.

:func:`open_unit_file` yields the root :class:`Group` of a file. Two readers
implement the same four methods (``members``, ``group``, ``attrs``,
``dataset``):

- ``"direct"`` (:mod:`aa4xr.h5direct`, when present): parses the few HDF5
  structures the AA4 writers use straight from the file's bytes; anything else
  raises :class:`Unsupported` and the caller reads the file with h5py;
- ``"h5py"``: h5py's public low-level API, for any HDF5 file.

``$AA4XR_READER=h5py`` forces the h5py reader. Either reader records in
:class:`Features` what it met (superblock version, string encodings, dataset
shapes and types), so ``aa4xr check`` can say how each file was read.
"""

from __future__ import annotations

import os
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Protocol

import h5py
import numpy as np

READERS = ("direct", "h5py")
#: What :meth:`Group.members` reports for each link.
GROUP, DATASET, OTHER = "group", "dataset", "other"
#: What :meth:`Group.children` returns per group: members, attributes, datasets by name.
Child = tuple[dict[str, str], dict[str, Any], dict[str, np.ndarray]]


class Unsupported(Exception):
    """A structure the direct reader does not parse: the file goes to h5py instead."""


class Corrupt(Unsupported):
    """An offset, size or structure of the file that cannot be right: the file is not read at all.

    Not handed to libhdf5, which can loop forever on some corrupt files.
    """


@dataclass
class Features:
    """What reading one file met.

    Attributes
    ----------
    reader : str
        ``"direct"`` or ``"h5py"``.
    superblock : int or None
        The superblock version.
    fallback : str
        Why the direct reader handed the file to h5py ("" when it did not).
    strings, numbers, shapes : Counter
        Attribute string encodings (``"vlen"``, ``"fixed NULLTERM"``,
        ``"fixed NULLTERM without NUL"``, ``"fixed NULLPAD"``, ``"fixed
        SPACEPAD"``), attribute number types (``"int64"``, ``"float64"``, ...)
        and dataset shapes and types (``"float64 (n, 1)"``, ``"int64 scalar"``).
    """

    reader: str
    superblock: int | None = None
    fallback: str = ""
    strings: Counter = field(default_factory=Counter)
    numbers: Counter = field(default_factory=Counter)
    shapes: Counter = field(default_factory=Counter)

    def writer(self) -> str:
        """``"MATLAB"`` when every number is float64 and every string fixed-length,
        ``"h5py"`` when any is not, ``""`` when the file held neither.

        Examples
        --------
        >>> Features("h5py", numbers=Counter({"float64": 3}), strings=Counter({"fixed NULLTERM": 2})).writer()
        'MATLAB'
        """
        if not self.numbers and not self.strings:
            return ""
        matlab = set(self.numbers) <= {"float64"} and all(k.startswith("fixed") for k in self.strings)
        return "MATLAB" if matlab else "h5py"


def shape_kind(shape: tuple[int, ...]) -> str:
    """Name a dataset shape the way AA4_FORMAT.md does.

    Examples
    --------
    >>> [shape_kind(s) for s in [(), (5,), (5, 1), (1, 5), (1, 1), (2, 3)]]
    ['scalar', '(n,)', '(n, 1)', '(1, n)', '(1, 1)', '(2, 3)']
    """
    if shape == ():
        return "scalar"
    if len(shape) == 1:
        return "(n,)"
    if shape == (1, 1):
        return "(1, 1)"
    if len(shape) == 2 and shape[1] == 1:
        return "(n, 1)"
    if len(shape) == 2 and shape[0] == 1:
        return "(1, n)"
    return str(tuple(shape))


class Group(Protocol):
    """One HDF5 group of a unit file, as both readers present it."""

    path: str
    features: Features

    def members(self) -> dict[str, str]:
        """Link names -> :data:`GROUP`, :data:`DATASET` or :data:`OTHER`."""

    def group(self, name: str) -> "Group":
        """The member group ``name``."""

    def attrs(self) -> dict[str, Any]:
        """Every attribute: ``str`` for strings (padding removed), NumPy scalars of
        the stored type for numbers, arrays for several values, None when empty."""

    def dataset(self, name: str) -> np.ndarray:
        """The member dataset ``name`` with its stored shape and type."""

    def children(self, names: Iterable[str], datasets: Iterable[str]) -> list[Child]:
        """For each member group in ``names``: its members, its attributes and
        those of its ``datasets`` it holds, as the three methods above return them."""


STRPAD = {h5py.h5t.STR_NULLTERM: "NULLTERM", h5py.h5t.STR_NULLPAD: "NULLPAD", h5py.h5t.STR_SPACEPAD: "SPACEPAD"}


class H5pyGroup:
    """:class:`Group` through h5py's public low-level API."""

    def __init__(self, gid: h5py.h5g.GroupID, path: str, features: Features):
        self._gid, self.path, self.features = gid, path, features

    def members(self) -> dict[str, str]:
        kinds = {h5py.h5o.TYPE_GROUP: GROUP, h5py.h5o.TYPE_DATASET: DATASET}
        out = {}
        for name in self._gid:
            try:
                out[name.decode()] = kinds.get(h5py.h5o.get_info(self._gid, name).type, OTHER)
            except KeyError:  # a dangling soft or external link
                out[name.decode()] = OTHER
        return out

    def group(self, name: str) -> H5pyGroup:
        return H5pyGroup(h5py.h5g.open(self._gid, name.encode()), f"{self.path.rstrip('/')}/{name}", self.features)

    def attrs(self) -> dict[str, Any]:
        out = {}
        for i in range(h5py.h5a.get_num_attrs(self._gid)):
            attr = h5py.h5a.open(self._gid, index=i)
            out[attr.name.decode()] = self._attr_value(attr)
        return out

    def _attr_value(self, attr: h5py.h5a.AttrID) -> Any:
        if attr.shape is None:  # an empty dataspace
            return None
        tid = attr.get_type()
        buf = np.empty(attr.shape, dtype=attr.dtype)
        attr.read(buf, mtype=h5py.h5t.py_create(attr.dtype))
        if isinstance(tid, h5py.h5t.TypeStringID):
            if tid.is_variable_str():
                kind = "vlen"
            else:
                kind = f"fixed {STRPAD.get(tid.get_strpad(), 'other')}"
                if kind == "fixed NULLTERM" and all(len(v) == tid.get_size() for v in buf.reshape(-1)):
                    kind += " without NUL"
            self.features.strings[kind] += 1
            text = np.array([v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                             for v in buf.reshape(-1)], dtype=object).reshape(buf.shape)
            return text if text.ndim else text[()]
        self.features.numbers[buf.dtype.name] += 1
        return buf if buf.ndim else buf[()]

    def dataset(self, name: str) -> np.ndarray:
        did = h5py.h5d.open(self._gid, name.encode())
        buf = np.empty(did.shape, dtype=did.dtype)
        if buf.size:
            did.read(h5py.h5s.ALL, h5py.h5s.ALL, buf)
        self.features.shapes[f"{buf.dtype.name} {shape_kind(buf.shape)}"] += 1
        return buf

    def children(self, names: Iterable[str], datasets: Iterable[str]) -> list[Child]:
        out, wanted = [], frozenset(datasets)
        for name in names:
            group = self.group(name)
            members = group.members()
            out.append((members, group.attrs(),
                        {d: group.dataset(d) for d, kind in members.items() if kind == DATASET and d in wanted}))
        return out


def reader_choice(reader: str | None = None) -> str:
    """The reader to use: ``reader``, else ``$AA4XR_READER``, else ``"direct"``.

    Examples
    --------
    >>> reader_choice("h5py")
    'h5py'
    """
    chosen = reader or os.environ.get("AA4XR_READER") or "direct"
    if chosen not in READERS:
        raise ValueError(f"reader {chosen!r} (or $AA4XR_READER): expected one of {READERS}")
    return chosen


@contextmanager
def open_h5py(path: str | os.PathLike) -> Iterator[H5pyGroup]:
    """The root group of a file, through h5py. Raises ``OSError`` when it is not HDF5."""
    fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY)
    try:
        features = Features("h5py", superblock=fid.get_create_plist().get_version()[0])
        yield H5pyGroup(h5py.h5g.open(fid, b"/"), "/", features)
    finally:
        fid.close()
