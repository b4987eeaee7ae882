"""Per-trial HDF5 reads straight through libhdf5, the library h5py has loaded.

An AA4 unit file holds ~1,400 trial groups, each with a ``spike_times``
dataset and four scalar attributes: ~10 HDF5 calls per trial. Through h5py,
even its low-level API, each call costs a Python object, a lock and a weakref
registration (~20 us); through ``ctypes`` into the same libhdf5 it costs ~2 us.
Measured on the "animal" benchmark corpus this halves the per-trial cost and
brings it below the cost of reading ``spike_times`` alone with h5py
(``benchmarks/ingest.py``). When the library cannot be located (an unusual
h5py build), :func:`read_trials` falls back to h5py's low-level API, with the
same results.

Calls are made under h5py's global lock, so they never race h5py's own.
"""

from __future__ import annotations

import ctypes
import glob
import os
from functools import lru_cache

import h5py
import numpy as np

HID = ctypes.c_int64
SILENT = -999.0


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    """The libhdf5 that h5py uses, with the signatures declared; None if not found."""
    if os.environ.get("AA4XR_NO_CTYPES"):
        return None
    candidates = glob.glob(os.path.join(os.path.dirname(h5py.__file__), os.pardir, "h5py.libs", "libhdf5-*.so*"))
    if not candidates and os.path.exists("/proc/self/maps"):
        with open("/proc/self/maps") as maps:
            candidates = sorted({line.split()[-1] for line in maps if "/libhdf5.so" in line
                                 or "/libhdf5-" in line and "_hl" not in line})
    candidates = [c for c in candidates if "_hl" not in os.path.basename(c)]
    if not candidates:
        return None
    lib = ctypes.CDLL(candidates[0])
    for name, args, res in (
        ("H5Gopen2", [HID, ctypes.c_char_p, HID], HID),
        ("H5Dopen2", [HID, ctypes.c_char_p, HID], HID),
        ("H5Aopen", [HID, ctypes.c_char_p, HID], HID),
        ("H5Aexists", [HID, ctypes.c_char_p], ctypes.c_int),
        ("H5Dget_space", [HID], HID),
        ("H5Aget_space", [HID], HID),
        ("H5Sget_simple_extent_npoints", [HID], ctypes.c_int64),
        ("H5Dread", [HID, HID, HID, HID, HID, ctypes.c_void_p], ctypes.c_int),
        ("H5Aread", [HID, HID, ctypes.c_void_p], ctypes.c_int),
        ("H5Gclose", [HID], ctypes.c_int),
        ("H5Dclose", [HID], ctypes.c_int),
        ("H5Aclose", [HID], ctypes.c_int),
        ("H5Sclose", [HID], ctypes.c_int),
        ("H5Aiterate2", [HID, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p],
         ctypes.c_int),
        ("H5Aget_type", [HID], HID),
        ("H5Tget_class", [HID], ctypes.c_int),
        ("H5Tis_variable_str", [HID], ctypes.c_int),
        ("H5Tget_size", [HID], ctypes.c_size_t),
        ("H5Tclose", [HID], ctypes.c_int),
        ("H5Treclaim", [HID, HID, HID, ctypes.c_void_p], ctypes.c_int),
    ):
        func = getattr(lib, name)
        func.argtypes, func.restype = args, res
    lib.H5open()
    lib.native_double = HID.in_dll(lib, "H5T_NATIVE_DOUBLE_g").value
    lib.native_int64 = HID.in_dll(lib, "H5T_NATIVE_LLONG_g").value
    return lib


INTEGER, FLOAT, STRING = 0, 1, 3  # H5T_class_t
ATTR_OPERATOR = ctypes.CFUNCTYPE(ctypes.c_int, HID, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p)


def _attr_value(lib: ctypes.CDLL, aid: int):
    """One attribute's value: a scalar, or an array when it holds several; ``...`` if unsupported."""
    tid = lib.H5Aget_type(aid)
    space = lib.H5Aget_space(aid)
    try:
        n = lib.H5Sget_simple_extent_npoints(space)
        kind = lib.H5Tget_class(tid)
        if n < 1:
            return None
        if kind in (INTEGER, FLOAT):
            buf = np.empty(n, "i8" if kind == INTEGER else "f8")
            mtype = lib.native_int64 if kind == INTEGER else lib.native_double
            _check(lib.H5Aread(aid, mtype, buf.ctypes.data), "read an attribute")
            values = buf.tolist()
        elif kind == STRING and lib.H5Tis_variable_str(tid) > 0:
            ptrs = (ctypes.c_char_p * n)()
            _check(lib.H5Aread(aid, tid, ptrs), "read an attribute")  # the file's type: same charset
            values = [p or b"" for p in ptrs]
            lib.H5Treclaim(tid, space, 0, ptrs)
        elif kind == STRING:
            size = lib.H5Tget_size(tid)
            buf = ctypes.create_string_buffer(size * n)
            _check(lib.H5Aread(aid, tid, buf), "read an attribute")
            values = [buf.raw[i * size:(i + 1) * size].rstrip(b"\0") for i in range(n)]
        else:
            return ...
    finally:
        lib.H5Sclose(space)
        lib.H5Tclose(tid)
    return values[0] if n == 1 else np.array(values)


def read_attrs(oid: h5py.h5o.ObjectID) -> dict:
    """Every attribute of an HDF5 object, raw (bytes, ints, floats, arrays).

    Integer, float and string attributes are read through libhdf5 directly;
    anything else (and everything when the library is not found) through h5py.
    """
    lib = _library()
    if lib is None:
        return _read_attrs_h5py(oid)
    out: dict = {}
    errors: list[Exception] = []

    def visit(loc, name, info, data):
        aid = lib.H5Aopen(loc, name, 0)
        try:
            out[name.decode()] = _attr_value(lib, aid)
        except OSError as exc:  # an exception must not cross the C boundary
            errors.append(exc)
            return -1
        finally:
            lib.H5Aclose(aid)
        return 0

    with h5py._objects.phil:
        status = lib.H5Aiterate2(oid.id, 0, 0, None, ATTR_OPERATOR(visit), None)
    if errors:
        raise errors[0]
    _check(status, "list attributes")
    if any(v is ... for v in out.values()):
        fallback = _read_attrs_h5py(oid)
        out = {k: fallback[k] if v is ... else v for k, v in out.items()}
    return out


def _read_attrs_h5py(oid: h5py.h5o.ObjectID) -> dict:
    out = {}
    for i in range(h5py.h5a.get_num_attrs(oid)):
        attr = h5py.h5a.open(oid, index=i)
        if attr.shape is None:  # empty dataspace
            out[attr.name.decode()] = None
            continue
        buf = np.empty(attr.shape, dtype=attr.dtype)
        attr.read(buf, mtype=h5py.h5t.py_create(attr.dtype))
        out[attr.name.decode()] = buf if buf.ndim else buf[()]
    return out


def _check(value: int, what: str) -> int:
    if value < 0:
        raise OSError(f"HDF5 could not {what}")
    return value


def _read_ctypes(lib: ctypes.CDLL, parent: int, names: list[bytes], attrs: tuple[bytes, ...]):
    f64 = lib.native_double
    spikes, values = [], np.full((len(names), len(attrs)), np.nan)
    for i, name in enumerate(names):
        gid = _check(lib.H5Gopen2(parent, name, 0), f"open trial group {name.decode()}")
        try:
            did = _check(lib.H5Dopen2(gid, b"spike_times", 0), f"open {name.decode()}/spike_times")
            try:
                space = lib.H5Dget_space(did)
                n = lib.H5Sget_simple_extent_npoints(space)
                lib.H5Sclose(space)
                buf = np.empty(max(n, 0), "f8")
                _check(lib.H5Dread(did, f64, 0, 0, 0, buf.ctypes.data), f"read {name.decode()}/spike_times")
            finally:
                lib.H5Dclose(did)
            for j, attr in enumerate(attrs):
                if lib.H5Aexists(gid, attr) > 0:
                    aid = lib.H5Aopen(gid, attr, 0)
                    space = lib.H5Aget_space(aid)
                    cell = np.empty(max(lib.H5Sget_simple_extent_npoints(space), 1), "f8")
                    lib.H5Sclose(space)
                    if lib.H5Aread(aid, f64, cell.ctypes.data) >= 0:
                        values[i, j] = cell[0]
                    lib.H5Aclose(aid)
        finally:
            lib.H5Gclose(gid)
        spikes.append(buf[:0] if buf.size == 1 and buf[0] == SILENT else buf)
    return spikes, values


def _read_h5py(parent: h5py.h5g.GroupID, names: list[bytes], attrs: tuple[bytes, ...]):
    spikes, values = [], np.full((len(names), len(attrs)), np.nan)
    for i, name in enumerate(names):
        gid = h5py.h5g.open(parent, name)
        dset = h5py.h5d.open(gid, b"spike_times")
        buf = np.empty(dset.shape, "f8")
        dset.read(h5py.h5s.ALL, h5py.h5s.ALL, buf)
        buf = buf.reshape(-1)
        for j, attr in enumerate(attrs):
            if h5py.h5a.exists(gid, attr):
                a = h5py.h5a.open(gid, attr)
                cell = np.empty(a.shape, "f8")
                a.read(cell)
                values[i, j] = cell.reshape(-1)[0] if cell.size else np.nan
        spikes.append(buf[:0] if buf.size == 1 and buf[0] == SILENT else buf)
    return spikes, values


def read_trials(parent: h5py.h5g.GroupID, names: list[bytes], attrs: tuple[bytes, ...]):
    """Spike times and numeric attributes of the trial groups ``names`` under ``parent``.

    Parameters
    ----------
    parent : h5py.h5g.GroupID
        The stimulus group.
    names : list of bytes
        Trial group names, in the order wanted.
    attrs : tuple of bytes
        Numeric scalar attributes to read from each trial group.

    Returns
    -------
    spikes : list of ndarray
        float64 spike times per trial; a trial storing the -999 sentinel is empty.
    values : ndarray, shape (len(names), len(attrs))
        The attributes as float64, NaN where absent.
    """
    lib = _library()
    with h5py._objects.phil:
        if lib is None:
            return _read_h5py(parent, names, attrs)
        return _read_ctypes(lib, parent.id, names, attrs)
