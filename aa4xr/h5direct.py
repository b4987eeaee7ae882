"""A direct reader for the few HDF5 structures AA4 unit files use.

:func:`open_direct` parses a file's bytes (one ``read``) and yields its root
group as an :class:`aa4xr.hdf5.Group` whose methods return what
:class:`aa4xr.hdf5.H5pyGroup` returns, without libhdf5's per-object cost.

It understands exactly: superblock v0 (and v1) with 8-byte offsets and
lengths, symbol-table groups (v1 B-tree, SNOD nodes, local heap), v1 object
headers with continuation blocks, dataspace (v1, v2), datatype (fixed-point,
IEEE float, fixed-length and variable-length strings), layout v3 (contiguous
or compact) and attribute (v1-v3) messages, and the global heap for
variable-length strings. Anything else, and any offset, size, signature or
version that does not check out, raises :class:`aa4xr.hdf5.Unsupported` with
a short reason, so the caller reads the file with h5py instead: a corrupt
file is never misread.

Examples
--------
>>> from aa4xr.synthetic import sample_corpus
>>> path = sorted(sample_corpus().glob("*/Site*.h5"))[0]
>>> with open_direct(path) as root:
...     (root.features.reader, root.features.superblock, "electrode" in root.attrs())
('direct', 0, True)
"""

from __future__ import annotations

import os
import struct
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from .hdf5 import DATASET, GROUP, OTHER, Features, Unsupported, shape_kind

UNDEFINED = 0xFFFFFFFFFFFFFFFF
SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Bounds on loops driven by the file: B-tree depth, continuation blocks, rank.
MAX_DEPTH, MAX_CHUNKS, MAX_RANK = 32, 256, 32
#: Object header message types.
NIL, DATASPACE, LINKINFO, DATATYPE, FILL_OLD, FILL, LINK, EXTERNAL, LAYOUT = 0, 1, 2, 3, 4, 5, 6, 7, 8
BOGUS, GROUPINFO, FILTERS, ATTRIBUTE, COMMENT, MTIME_OLD, SHMESG = 9, 10, 11, 12, 13, 14, 15
CONTINUATION, STAB, MTIME, BTREE_K, DRVINFO, ATTRINFO, REFCOUNT = 16, 17, 18, 19, 20, 21, 22
#: Messages that change nothing this reader returns.
IGNORED = frozenset({NIL, FILL_OLD, FILL, COMMENT, MTIME_OLD, MTIME, REFCOUNT})
KNOWN = IGNORED | {DATASPACE, DATATYPE, LAYOUT, ATTRIBUTE, CONTINUATION, STAB}
STRPAD = {0: "NULLTERM", 1: "NULLPAD", 2: "SPACEPAD"}

_SUPER = struct.Struct("<8sBBBBBBBBHHI")
_ADDR4 = struct.Struct("<QQQQ")
_ENTRY = struct.Struct("<QQI4xQQ")  # name offset, header, cache type, scratch (B-tree, heap)
_PREFIX = struct.Struct("<BBHII4x")
_MSG = struct.Struct("<HHB3x")
_TREE = struct.Struct("<4sBBHQQ")
_SNOD = struct.Struct("<4sBxH")
_HEAP = struct.Struct("<4sB3xQQQ")
_GCOL = struct.Struct("<4sB3xQ")
_GOBJ = struct.Struct("<HH4xQ")
_QQ = struct.Struct("<QQ")
_Q = struct.Struct("<Q")
_ATTR1 = struct.Struct("<BxHHH")
_ATTR3 = struct.Struct("<BBHHHB")
_DTYPE = struct.Struct("<BBBBI")
_VLEN = struct.Struct("<IQI")
#: What a parse of a malformed structure could raise despite the checks (a bug): reported as Unsupported.
MALFORMED = (struct.error, IndexError, ValueError, OverflowError, MemoryError)
IEEE = {4: (31, 23, 8, 0, 23, 127), 8: (63, 52, 11, 0, 52, 1023)}


def _check(ok: bool, why: str) -> None:
    if not ok:
        raise Unsupported(why)


class _Type:
    """A decoded datatype: ``kind`` "number", "fixed" or "vlen"; numpy ``dtype``;
    ``size`` in the file; ``pad`` and ``utf8`` for strings."""

    __slots__ = ("kind", "dtype", "size", "pad", "utf8")

    def __init__(self, kind: str, dtype: np.dtype | None, size: int, pad: int = 0, utf8: bool = False):
        self.kind, self.dtype, self.size, self.pad, self.utf8 = kind, dtype, size, pad, utf8


def _datatype(buf: bytes, pos: int, end: int) -> _Type:
    """Decode a datatype message at ``buf[pos:end]``."""
    _check(pos + 8 <= end, "datatype message too short")
    cv, b0, b1, b2, size = _DTYPE.unpack_from(buf, pos)
    cls, version = cv & 15, cv >> 4
    bits = b0 | b1 << 8 | b2 << 16
    _check(version == 1, f"datatype version {version}")
    if cls == 0:  # fixed-point
        _check(pos + 12 <= end and size in (1, 2, 4, 8) and bits & ~0b1001 == 0, "unsupported integer type")
        offset, precision = struct.unpack_from("<HH", buf, pos + 8)
        _check(offset == 0 and precision == 8 * size, "integer with padding bits")
        return _Type("number", np.dtype(f"{'<>'[bits & 1]}{'ui'[bits >> 3 & 1]}{size}"), size)
    if cls == 1:  # IEEE floating point
        _check(pos + 20 <= end and size in IEEE and bits & ~0b1 == 0b100000 | IEEE[size][0] << 8,
               "unsupported float type")
        fields = struct.unpack_from("<HHBBBBI", buf, pos + 8)
        _check(fields[:2] == (0, 8 * size) and fields[2:] == IEEE[size][1:], "non-IEEE float")
        return _Type("number", np.dtype(f"{'<>'[bits & 1]}f{size}"), size)
    if cls == 3:  # fixed-length string
        _check(bits >> 4 in (0, 1) and bits & 15 in STRPAD and bits >> 8 == 0 and size > 0, "unsupported string type")
        return _Type("fixed", np.dtype(f"S{size}"), size, bits & 15, bits >> 4 == 1)
    if cls == 9:  # variable-length: strings only
        _check(bits & 15 == 1 and bits >> 4 & 15 in STRPAD and bits >> 8 & 15 in (0, 1) and bits >> 12 == 0,
               "variable-length sequence, not string")
        _check(size == 16, f"variable-length size {size}")
        base = _datatype(buf, pos + 8, end)
        _check(base.kind == "number" and base.size == 1, "variable-length string of non-characters")
        return _Type("vlen", None, 16, bits >> 4 & 15, bits >> 8 & 15 == 1)
    raise Unsupported(f"datatype class {cls}")


def _dataspace(buf: bytes, pos: int, end: int) -> tuple[int, ...] | None:
    """Decode a dataspace message: the shape, None for a null dataspace."""
    _check(pos + 8 <= end, "dataspace message too short")
    version, rank, flags, kind = buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]
    if version == 1:
        start, null = pos + 8, False
        _check(flags & ~3 == 0, "dataspace flags")
    elif version == 2:
        start, null = pos + 4, kind == 2
        _check(flags & ~1 == 0 and kind <= 2 and (kind == 1) == (rank > 0), "dataspace type")
    else:
        raise Unsupported(f"dataspace version {version}")
    _check(rank <= MAX_RANK and start + 8 * rank * (1 + (flags & 1) + (flags >> 1 & 1)) <= end, "dataspace rank")
    if null:
        return None
    return struct.unpack_from(f"<{rank}Q", buf, start)


def _strings(raw: bytes, t: _Type, n: int) -> tuple[list[str], bool]:
    """Fixed-length strings as h5py reads them (into NULLPAD ``S<size>``), and
    whether none held a NUL byte."""
    size, out, no_nul = t.size, [], True
    for i in range(n):
        s = raw[i * size:(i + 1) * size]
        if t.pad == 2:  # SPACEPAD: libhdf5 strips trailing spaces, numpy trailing NULs
            s = s.rstrip(b" ").rstrip(b"\0")
        elif t.pad == 0 or t.utf8:  # converted by libhdf5: up to the first NUL
            s = s.split(b"\0", 1)[0]
        else:  # same type as h5py's: numpy strips trailing NULs
            s = s.rstrip(b"\0")
        no_nul = no_nul and len(s) == size
        out.append(s.decode("utf-8", "replace"))
    return out, no_nul


class _File:
    """The bytes of one file and the structures parsed from them (cached by address)."""

    def __init__(self, buf: bytes, features: Features):
        self.buf, self.features = buf, features
        self.headers: dict[int, _Header] = {}
        self.heaps: dict[int, dict[int, tuple[int, int]]] = {}
        _check(len(buf) >= 96 and buf[:8] == SIGNATURE, "no HDF5 superblock at offset 0")
        sig, version, fs, root_v, _, shmsg, offsets, lengths, _, self.leaf_k, self.node_k, _ = _SUPER.unpack_from(buf)
        _check(version in (0, 1), f"superblock version {version}")
        features.superblock = version
        _check(offsets == 8 and lengths == 8, f"{offsets}-byte offsets, {lengths}-byte lengths")
        _check((fs, root_v, shmsg) == (0, 0, 0) and 0 < self.leaf_k and 0 < self.node_k, "superblock fields")
        pos = 24 + 4 * version
        base, _, eof, driver = _ADDR4.unpack_from(buf, pos)
        _check(base == 0 and driver == UNDEFINED, "superblock base address or driver block")
        _check(eof <= len(buf), f"file truncated: {len(buf)} bytes, superblock says {eof}")
        self.eof = eof
        _, self.root, _, _, _ = _ENTRY.unpack_from(buf, pos + 32)

    def span(self, addr: int, size: int) -> int:
        """``addr`` after checking ``[addr, addr + size)`` lies in the file."""
        if addr + size > self.eof or addr == UNDEFINED:
            raise Unsupported(f"address {addr:#x}+{size} beyond the end of the file")
        return addr

    def header(self, addr: int) -> _Header:
        h = self.headers.get(addr)
        if h is None:
            h = self.headers[addr] = _Header(self, addr)
        return h

    def vlen(self, ref: bytes, offset: int) -> bytes:
        """A variable-length string's bytes from its global-heap reference."""
        length, coll, index = _VLEN.unpack_from(ref, offset)
        if length == 0 and coll in (0, UNDEFINED):
            return b""
        objects = self.heaps.get(coll)
        if objects is None:
            objects = self.heaps[coll] = self._collection(coll)
        where = objects.get(index)
        _check(where is not None and index > 0, f"global heap object {index} missing")
        start, size = where
        _check(size == length, "global heap object size")
        return self.buf[start:start + size]

    def _collection(self, addr: int) -> dict[int, tuple[int, int]]:
        buf = self.buf
        sig, version, size = _GCOL.unpack_from(buf, self.span(addr, 16))
        _check(sig == b"GCOL" and version == 1 and size >= 16, "global heap signature")
        end = self.span(addr, size) + size
        pos, objects = addr + 16, {}
        while pos + 16 <= end:
            index, _, osize = _GOBJ.unpack_from(buf, pos)
            if index == 0:  # free space: the rest of the collection
                break
            _check(pos + 16 + osize <= end and index not in objects, "global heap object bounds")
            objects[index] = (pos + 16, osize)
            pos += 16 + (osize + 7 & ~7)
        return objects


class _Header:
    """One v1 object header: its kind and where its messages are."""

    __slots__ = ("kind", "stab", "attributes", "dtype", "space", "layout")

    def __init__(self, f: _File, addr: int):
        buf = f.buf
        version, _, nmesgs, _, size = _PREFIX.unpack_from(buf, f.span(addr, 16))
        _check(version == 1, "object header not version 1")
        self.stab = self.dtype = self.space = self.layout = None
        self.attributes: list[tuple[int, int]] = []
        chunks, seen, count = [(addr + 16, size)], {addr}, 0
        while chunks:
            pos, size = chunks.pop()
            end = f.span(pos, size) + size
            while pos < end:
                _check(pos + 8 <= end, "object header message bounds")
                mtype, msize, flags = _MSG.unpack_from(buf, pos)
                pos += 8
                _check(pos + msize <= end and msize & 7 == 0, "object header message bounds")
                _check(flags & ~1 == 0, f"message flags {flags:#x} (shared message?)")
                count += 1
                if mtype == ATTRIBUTE:
                    self.attributes.append((pos, pos + msize))
                elif mtype == DATASPACE or mtype == DATATYPE or mtype == LAYOUT or mtype == STAB:
                    _check(getattr(self, _SLOT[mtype]) is None, "repeated message")
                    setattr(self, _SLOT[mtype], (pos, pos + msize))
                elif mtype == CONTINUATION:
                    _check(msize >= 16 and len(seen) < MAX_CHUNKS, "continuation message")
                    caddr, clen = _QQ.unpack_from(buf, pos)
                    _check(caddr not in seen, "continuation cycle")
                    seen.add(caddr)
                    chunks.append((caddr, clen))
                elif mtype not in IGNORED:
                    raise Unsupported(f"object header message type {mtype:#x}")
                pos += msize
        _check(count == nmesgs, "object header message count")
        if self.stab is not None:
            self.kind = GROUP
            _check(self.stab[1] - self.stab[0] >= 16, "symbol table message")
        elif self.dtype is not None and self.space is not None:
            self.kind = DATASET
        else:
            self.kind = OTHER


_SLOT = {DATASPACE: "space", DATATYPE: "dtype", LAYOUT: "layout", STAB: "stab"}


def _name(buf: bytes, start: int, end: int) -> bytes:
    """A NUL-terminated name in ``buf[start:end]``."""
    stop = buf.find(b"\0", start, end)
    _check(stop >= 0, "name without NUL")
    return buf[start:stop]


def _links(f: _File, header: _Header) -> dict[str, int]:
    """A symbol-table group's members: name -> object header address, in name order."""
    buf = f.buf
    btree, heap = _QQ.unpack_from(buf, header.stab[0])
    sig, version, size, _, data = _HEAP.unpack_from(buf, f.span(heap, 32))
    _check(sig == b"HEAP" and version == 0, "local heap signature")
    out: dict[str, int] = {}
    _walk(f, btree, -1, f.span(data, size), data + size, out, [b""], set(), b"", None)
    return out


def _walk(f: _File, addr: int, level: int, lo: int, hi: int, out: dict, last: list, seen: set,
          left: bytes, right: bytes | None) -> None:
    """Collect the symbol-table entries under B-tree node ``addr`` into ``out``.

    Checks what libhdf5's lookup by name relies on: every name lies between
    the keys of each node on its path (``key[i] < name <= key[i + 1]``), and
    names increase along the tree. ``last`` holds the last name collected.
    """
    buf = f.buf
    _check(addr not in seen, "B-tree cycle")
    seen.add(addr)
    sig, ntype, nlevel, used, _, _ = _TREE.unpack_from(buf, f.span(addr, 24))
    _check(sig == b"TREE" and ntype == 0, "group B-tree signature")
    _check(nlevel == level or level < 0 and nlevel < MAX_DEPTH, "B-tree level")
    _check(used <= 2 * f.node_k and (used > 0 or level < 0), "B-tree entries")
    keys = struct.unpack_from(f"<{2 * used + 1}Q", buf, f.span(addr + 24, 16 * used + 8))
    bounds = [_name(buf, _heap_at(k, lo, hi), hi) for k in keys[::2]]
    for i in range(used):
        child, low, high = keys[2 * i + 1], max(bounds[i], left), bounds[i + 1]
        if right is not None:
            high = min(high, right)
        if nlevel > 0:
            _walk(f, child, nlevel - 1, lo, hi, out, last, seen, low, high)
            continue
        sig, version, nsym = _SNOD.unpack_from(buf, f.span(child, 8))
        _check(sig == b"SNOD" and version == 1 and 0 < nsym <= 2 * f.leaf_k, "symbol table node")
        f.span(child, 8 + 40 * nsym)
        for j in range(nsym):
            noff, obj, cache, _, _ = _ENTRY.unpack_from(buf, child + 8 + 40 * j)
            name = _name(buf, _heap_at(noff, lo, hi), hi)
            _check(cache in (0, 1), "soft link or unknown symbol table entry")
            _check(low < name <= high and last[0] < name, "B-tree names out of order")
            last[0] = name
            try:
                out[name.decode()] = obj
            except UnicodeDecodeError:
                raise Unsupported("member name is not UTF-8") from None


def _heap_at(offset: int, lo: int, hi: int) -> int:
    _check(lo + offset < hi, "local heap offset")
    return lo + offset


class DirectGroup:
    """:class:`aa4xr.hdf5.Group` parsed from the file's bytes (see :func:`open_direct`)."""

    __slots__ = ("_file", "_header", "_links", "path", "features")

    def __init__(self, f: _File, header: _Header, path: str):
        self._file, self._header, self.path, self.features = f, header, path, f.features
        self._links: dict[str, int] | None = None

    def _members(self) -> dict[str, int]:
        if self._links is None:
            try:
                self._links = _links(self._file, self._header)
            except MALFORMED as exc:
                raise Unsupported(f"malformed group {self.path} ({exc})") from exc
        return self._links

    def _child(self, name: str, kind: str) -> _Header:
        addr = self._members().get(name)
        if addr is None:
            raise KeyError(f"{self.path}: no member {name!r}")
        try:
            h = self._file.header(addr)
        except MALFORMED as exc:
            raise Unsupported(f"malformed object header {self.path}/{name} ({exc})") from exc
        if h.kind != kind:
            raise TypeError(f"{self.path}/{name} is not a {kind}")
        return h

    def members(self) -> dict[str, str]:
        header = self._file.header
        try:
            return {name: header(addr).kind for name, addr in self._members().items()}
        except MALFORMED as exc:
            raise Unsupported(f"malformed member of {self.path} ({exc})") from exc

    def group(self, name: str) -> DirectGroup:
        return DirectGroup(self._file, self._child(name, GROUP), f"{self.path.rstrip('/')}/{name}")

    def attrs(self) -> dict[str, Any]:
        f = self._file
        try:
            pairs = sorted((_attribute(f, start, end) for start, end in self._header.attributes), key=_first)
        except MALFORMED as exc:
            raise Unsupported(f"malformed attribute of {self.path} ({exc})") from exc
        out = dict(pairs)
        _check(len(out) == len(pairs), "repeated attribute name")
        return out

    def dataset(self, name: str) -> np.ndarray:
        h = self._child(name, DATASET)
        try:
            data = _dataset(self._file, h)
        except MALFORMED as exc:
            raise Unsupported(f"malformed dataset {self.path}/{name} ({exc})") from exc
        self.features.shapes[f"{data.dtype.name} {shape_kind(data.shape)}"] += 1
        return data


def _first(pair: tuple) -> Any:
    return pair[0]


def _dataset(f: _File, h: _Header) -> np.ndarray:
    """The values of a contiguous or compact dataset of numbers."""
    buf = f.buf
    t = _datatype(buf, *h.dtype)
    shape = _dataspace(buf, *h.space)
    _check(t.kind == "number" and shape is not None, "dataset of strings or null dataspace")
    _check(h.layout is not None, "dataset without layout")
    pos, end = h.layout
    _check(end - pos >= 4 and buf[pos] == 3, "layout message version")
    n = 1
    for d in shape:
        n *= d
    nbytes = n * t.size
    if buf[pos + 1] == 1:  # contiguous
        _check(end - pos >= 18, "layout message too short")
        addr, size = _QQ.unpack_from(buf, pos + 2)
        if addr == UNDEFINED:
            _check(nbytes == 0, "contiguous dataset without storage (fill value)")
            return np.empty(shape, t.dtype)
        _check(size == nbytes, "contiguous storage size")
        return np.frombuffer(buf, t.dtype, n, f.span(addr, size)).reshape(shape).copy()
    if buf[pos + 1] == 0:  # compact
        size = struct.unpack_from("<H", buf, pos + 2)[0]
        _check(size == nbytes and pos + 4 + size <= end, "compact storage size")
        return np.frombuffer(buf, t.dtype, n, pos + 4).reshape(shape).copy()
    raise Unsupported(f"layout class {buf[pos + 1]} (chunked or virtual)")


def _attribute(f: _File, pos: int, end: int) -> tuple[str, Any]:
    """Decode one attribute message: (name, value as h5py returns it); counts its type."""
    buf = f.buf
    _check(end - pos >= 8, "attribute message too short")
    version = buf[pos]
    if version == 1:
        _, nsize, tsize, ssize = _ATTR1.unpack_from(buf, pos)
        p_name = pos + 8
        p_type = p_name + (nsize + 7 & ~7)
        p_space = p_type + (tsize + 7 & ~7)
        p_data = p_space + (ssize + 7 & ~7)
    elif version in (2, 3):
        _, flags, nsize, tsize, ssize, cset = _ATTR3.unpack_from(buf, pos)
        _check(flags == 0, "shared attribute datatype or dataspace")
        p_name = pos + (9 if version == 3 else 8)
        p_type, p_space = p_name + nsize, p_name + nsize + tsize
        p_data = p_space + ssize
    else:
        raise Unsupported(f"attribute message version {version}")
    _check(nsize > 0 and p_data <= end, "attribute message bounds")
    raw = buf[p_name:p_name + nsize]
    _check(raw.find(b"\0") == nsize - 1, "attribute name")
    try:
        name = raw[:-1].decode()
    except UnicodeDecodeError:
        raise Unsupported("attribute name is not UTF-8") from None
    t = _datatype(buf, p_type, p_type + tsize)
    shape = _dataspace(buf, p_space, p_space + ssize)
    if shape is None:
        return name, None
    n = 1
    for d in shape:
        n *= d
    _check(p_data + n * t.size <= end, "attribute data bounds")
    features = f.features
    if t.kind == "number":
        value = np.frombuffer(buf, t.dtype, n, p_data).reshape(shape).copy()
        features.numbers[value.dtype.name] += 1
        return name, value if shape else value[()]
    if t.kind == "fixed":
        texts, no_nul = _strings(buf[p_data:p_data + n * t.size], t, n)
        kind = f"fixed {STRPAD[t.pad]}"
        if kind == "fixed NULLTERM" and no_nul:
            kind += " without NUL"
    else:
        texts, kind = [], "vlen"
        for i in range(n):
            text = f.vlen(buf, p_data + 16 * i).split(b"\0", 1)[0]
            if t.utf8:
                try:
                    texts.append(text.decode())
                except UnicodeDecodeError:
                    raise Unsupported("variable-length UTF-8 string is not UTF-8") from None
            else:
                texts.append(text.decode("utf-8", "replace"))
    features.strings[kind] += 1
    if not shape:
        return name, texts[0]
    out = np.empty(n, dtype=object)
    out[:] = texts
    return name, out.reshape(shape)


@contextmanager
def open_direct(path: str | os.PathLike) -> Iterator[DirectGroup]:
    """The root group of an HDF5 file, parsed directly from its bytes.

    Raises
    ------
    aa4xr.hdf5.Unsupported
        On first meeting a structure outside the set this reader parses (see
        the module docstring), or any inconsistent offset, size or signature.
    OSError
        When the file cannot be read.

    Examples
    --------
    >>> from aa4xr.synthetic import sample_corpus
    >>> path = sorted(sample_corpus().glob("*/Site*.h5"))[0]
    >>> with open_direct(path) as root:
    ...     sorted(k for k, v in root.members().items() if v == "group")[:2]
    ['Call1', 'Call2']
    """
    with open(path, "rb") as fh:
        buf = fh.read()
    try:
        f = _File(buf, Features("direct"))
        root = f.header(f.root)
    except MALFORMED as exc:
        raise Unsupported(f"malformed structure ({exc})") from exc
    _check(root.kind == GROUP, "root is not a group")
    yield DirectGroup(f, root, "/")
