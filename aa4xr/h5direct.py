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
from operator import itemgetter
from typing import Any, Iterable, Iterator

import numpy as np

from .hdf5 import DATASET, GROUP, OTHER, Child, Corrupt, Features, Unsupported, shape_kind

UNDEFINED = 0xFFFFFFFFFFFFFFFF
SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Bounds on loops driven by the file: B-tree depth, continuation blocks, rank.
MAX_DEPTH, MAX_CHUNKS, MAX_RANK = 32, 256, 32
#: The object header message types this reader meets; any other is Unsupported
#: (link info and links, group info, filters, external files, shared messages, ...).
NIL, DATASPACE, DATATYPE, FILL_OLD, FILL, LAYOUT, ATTRIBUTE = 0, 1, 3, 4, 5, 8, 12
COMMENT, MTIME_OLD, CONTINUATION, STAB, MTIME, REFCOUNT = 13, 14, 16, 17, 18, 22
#: Messages that change nothing this reader returns (checked as libhdf5 would).
IGNORED = frozenset({NIL, FILL_OLD, FILL, COMMENT, MTIME_OLD, MTIME, REFCOUNT})
STRPAD = {0: "NULLTERM", 1: "NULLPAD", 2: "SPACEPAD"}

_SUPER = struct.Struct("<8sBBBBBBBBHHI")
_ADDR4 = struct.Struct("<QQQQ")
_ENTRY = struct.Struct("<QQI4xQQ")  # name offset, header, cache type, scratch (B-tree, heap)
_PREFIX = struct.Struct("<BBHII4x")
_MSG = struct.Struct("<HHB3x")
_TREE = struct.Struct("<4sBBHQQ")
_ONE_NODE = struct.Struct("<4sBBHQQQQQ")  # a B-tree node with one child: its key, child, key
_SNOD = struct.Struct("<4sBxH")
_HEAP = struct.Struct("<4sB3xQQQ")
_GCOL = struct.Struct("<4sB3xQ")
_GOBJ = struct.Struct("<HH4xQ")
_QQ = struct.Struct("<QQ")
_ATTR1 = struct.Struct("<BxHHH")
_DTYPE = struct.Struct("<BBBBI")
_VLEN = struct.Struct("<IQI")
#: What a parse of a malformed structure could raise despite the checks (a bug): reported as Unsupported.
MALFORMED = (struct.error, IndexError, ValueError, TypeError, OverflowError, MemoryError)
#: Entries kept in each cache of decoded descriptions (datatypes, attribute headers).
CACHE_SIZE = 4096
#: Header blocks kept per first message and size (the stimulus groups of an animal vary in string sizes).
VARIANTS = 32
_TYPES: dict[bytes, "_Type"] = {}
_BLOCKS: dict[tuple[bytes, int], list["_Block"]] = {}  # object header blocks by their first message and size
_FIRST = itemgetter(0)
_KEYS: dict[int, struct.Struct] = {}  # keys and children of a B-tree node, by entries used
_ENTRIES: dict[int, struct.Struct] = {}  # entries of a symbol table node, by their number
_HEAPS: dict[bytes, "_Names"] = {}  # local heaps by their bytes
_TEXT: dict[bytes, str] = {}  # member names, decoded
IEEE = {4: (31, 23, 8, 0, 23, 127), 8: (63, 52, 11, 0, 52, 1023)}


def _check(ok: bool, why: str) -> None:
    if not ok:
        raise Unsupported(why)


class _Type:
    """A decoded datatype.

    ``kind`` is "number", "fixed" (fixed-length string) or "vlen"
    (variable-length string); ``dtype`` the NumPy type h5py reads it as and
    ``name`` its name; ``size`` the bytes per element in the file; ``pad`` and
    ``utf8`` describe strings; ``scalar`` reads one 8-byte number fast;
    ``spaces`` remembers, by dataspace message bytes, a dataset's shape, number
    of values, bytes and :func:`_shape_label` (see :func:`_dataset`).
    """

    __slots__ = ("kind", "dtype", "name", "size", "pad", "utf8", "scalar", "spaces")

    def __init__(self, kind: str, dtype: np.dtype | None, size: int, pad: int = 0, utf8: bool = False):
        self.kind, self.dtype, self.size, self.pad, self.utf8 = kind, dtype, size, pad, utf8
        self.spaces: dict[bytes, tuple] = {}
        self.name = dtype.name if kind == "number" else ""
        self.scalar = None
        if kind == "number" and size == 8:
            unpack = struct.Struct(dtype.str[0] + {"i": "q", "u": "Q", "f": "d"}[dtype.kind]).unpack_from
            make = dtype.type
            self.scalar = lambda buf, pos: make(unpack(buf, pos)[0])


def _datatype(buf: bytes, pos: int, end: int) -> _Type:
    """Decode the datatype message ``buf[pos:end]`` (cached by its bytes)."""
    key = buf[pos:end]
    t = _TYPES.get(key)
    if t is None:
        t = _decode_datatype(key, 0, len(key))
        _remember(_TYPES, key, t)
    return t


def _remember(cache: dict, key: bytes, value: Any) -> None:
    """Store in a cache of decoded descriptions, dropping it all when it grows large."""
    if len(cache) >= CACHE_SIZE:
        cache.clear()
    cache[key] = value


def _decode_datatype(buf: bytes, pos: int, end: int) -> _Type:
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
        _check(bits >> 4 in (0, 1) and bits & 15 in STRPAD and bits >> 8 == 0 and 0 < size < 1 << 20,
               "unsupported string type")
        return _Type("fixed", np.dtype(f"S{size}"), size, bits & 15, bits >> 4 == 1)
    if cls == 9:  # variable-length: strings only
        _check(bits & 15 == 1 and bits >> 4 & 15 in STRPAD and bits >> 8 & 15 in (0, 1) and bits >> 12 == 0,
               "variable-length sequence, not string")
        _check(size == 16, f"variable-length size {size}")
        base = _decode_datatype(buf, pos + 8, end)
        _check(base.kind == "number" and base.size == 1, "variable-length string of non-characters")
        return _Type("vlen", None, 16, bits >> 4 & 15, bits >> 8 & 15 == 1)
    raise Unsupported(f"datatype class {cls}")


def _dataspace(buf: bytes, pos: int, end: int) -> tuple[int, ...] | None:
    """Decode a dataspace message: the shape, None for a null dataspace."""
    _check(pos + 4 <= end, "dataspace message too short")
    version, rank, flags, kind = buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]
    if version == 1:
        start, null = pos + 8, False
        _check(start <= end, "dataspace message too short")
        _check(flags & ~3 == 0, "dataspace flags")
    elif version == 2:
        start, null = pos + 4, kind == 2
        _check(flags & ~1 == 0 and kind <= 2 and (kind == 1) == (rank > 0), "dataspace type")
    else:
        raise Unsupported(f"dataspace version {version}")
    _check(rank <= MAX_RANK and start + 8 * rank * (1 + (flags & 1) + (flags >> 1 & 1)) <= end, "dataspace rank")
    if null:
        return None
    dims = struct.unpack_from(f"<{rank}Q", buf, start)
    if flags & 1:
        for dim, most in zip(dims, struct.unpack_from(f"<{rank}Q", buf, start + 8 * rank)):
            _check(dim <= most, "dataspace dimension above its maximum")
    return dims


def _strings(raw: bytes, t: _Type, n: int) -> tuple[list[str], bool]:
    """Fixed-length strings as h5py reads them (into NULLPAD ``S<size>``), and
    whether none held a NUL byte."""
    size, out, no_nul = t.size, [], True
    for i in range(n):
        s = raw[i * size:(i + 1) * size]
        if t.pad == 2:  # SPACEPAD: libhdf5 strips trailing spaces, numpy trailing NULs
            s = s.rstrip(b" ").rstrip(b"\0")
        elif t.pad == 0:  # converted by libhdf5: up to the first NUL
            s = s.split(b"\0", 1)[0]
        else:  # NULLPAD, h5py's own type: numpy strips trailing NULs
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
        if eof > len(buf):
            raise Corrupt(f"file truncated: {len(buf)} bytes, superblock says {eof}")
        self.eof = eof
        _, self.root, _, _, _ = _ENTRY.unpack_from(buf, pos + 32)

    def span(self, addr: int, size: int) -> int:
        """``addr`` after checking ``[addr, addr + size)`` lies in the file."""
        if addr + size > self.eof or addr == UNDEFINED:
            raise Corrupt(f"address {addr:#x}+{size} beyond the end of the file")
        return addr

    def header(self, addr: int) -> _Header:
        h = self.headers.get(addr)
        if h is None:
            h = self.headers[addr] = _Header(self, addr)
        return h

    def vlen(self, ref: bytes, offset: int) -> bytes:
        """A variable-length string's bytes from its global-heap reference."""
        length, coll, index = _VLEN.unpack_from(ref, offset)
        if coll == 0:  # a null string, whatever its length says
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
        while pos + 16 <= end:  # every object, as libhdf5 reads the collection
            index, _, osize = _GOBJ.unpack_from(buf, pos)
            if index == 0:  # free space, its header included
                _check(16 <= osize <= end - pos, "global heap free space")
                pos += osize
                continue
            _check(pos + 16 + osize <= end and index not in objects, "global heap object bounds")
            objects[index] = (pos + 16, osize)
            pos += 16 + (osize + 7 & ~7)
        return objects


class _Header:
    """One v1 object header: the object's kind and where its messages lie.

    ``stab`` is the position of the symbol-table message's data; ``dtype``,
    ``space`` and ``layout`` the ``(start, end)`` of the datatype, dataspace
    and layout messages (None when absent); ``attributes`` the ``(position,
    block)`` of each header block holding attribute messages.
    """

    __slots__ = ("kind", "stab", "attributes", "dtype", "space", "layout")

    def __init__(self, f: _File, addr: int):
        buf, eof = f.buf, f.eof
        if addr + 16 > eof:
            raise Corrupt(f"object header {addr:#x} beyond the end of the file")
        version, _, nmesgs, _, size = _PREFIX.unpack_from(buf, addr)
        _check(version == 1, "object header not version 1")
        stab = dtype = space = layout = None
        attributes: list[tuple[int, _Block]] = []
        pos, end, count, chunks, seen = addr + 16, addr + 16 + size, 0, [], {addr}
        while True:
            if end > eof:
                raise Corrupt("object header beyond the end of the file")
            block = _block(buf, pos, end)
            count += block.count
            if block.attributes:
                attributes.append((pos, block))
            if block.stab is not None:
                _check(stab is None, "symbol table message repeated")
                stab = pos + block.stab
            if block.dtype is not None:
                _check(dtype is None, "datatype message repeated")
                dtype = (pos + block.dtype[0], pos + block.dtype[1])
            if block.space is not None:
                _check(space is None, "dataspace message repeated")
                space = (pos + block.space[0], pos + block.space[1])
            if block.layout is not None:
                _check(layout is None, "layout message repeated")
                layout = (pos + block.layout[0], pos + block.layout[1])
            for start in block.continuations:
                caddr, clen = _QQ.unpack_from(buf, pos + start)
                _check(caddr not in seen and len(seen) < MAX_CHUNKS, "continuation cycle")
                seen.add(caddr)
                chunks.append((caddr, caddr + clen))
            if not chunks:
                break
            pos, end = chunks.pop()
        _check(count == nmesgs, "object header message count")
        self.stab, self.dtype, self.space, self.layout, self.attributes = stab, dtype, space, layout, attributes
        kind = _kind_of(stab, dtype, space)
        if kind is None:
            raise Unsupported("object of unknown type (libhdf5 cannot tell either)")
        self.kind = kind


def _kind_of(stab: int | None, dtype: tuple | None, space: tuple | None) -> str | None:
    """An object's kind from the messages its header holds (None: unknown)."""
    if stab is not None:
        return GROUP
    if dtype is not None:  # a dataset, or a named datatype without dataspace
        return DATASET if space is not None else OTHER
    return None


class _Block:
    """The messages of one object header block, found by a full parse and reused for
    every block whose structural bytes are the same (the headers of a file's trials
    differ only in addresses, shapes and values).

    ``checks`` holds the ``(start, stop, bytes)`` a block must share with this
    one: every message prefix, each attribute message up to its value, and the
    whole of messages whose content is checked once (datatypes, fill values,
    times). ``count`` is the number of messages; ``stab`` the start of the
    symbol-table message's data, ``dtype``, ``space``, ``layout`` the
    ``(start, stop)`` of those messages (None when absent), ``continuations``
    the starts of continuation messages and ``attributes`` the ``(start,
    stop)`` of attribute messages. ``plan`` is how to read the attributes,
    made on first use (:func:`_attribute_plan`). ``kind`` is the object's kind
    when the block is its whole header (None: unknown), and ``type`` the
    decoded datatype, made on first use. Offsets are relative to the block.
    """

    __slots__ = ("checks", "count", "stab", "dtype", "space", "layout", "continuations", "attributes", "plan",
                 "kind", "type")

    def __init__(self, checks: tuple, messages: list[tuple[int, int, int]]):
        self.checks, self.count, self.plan, self.type = checks, len(messages), None, None
        singles: dict[int, tuple[int, int]] = {}
        continuations, attributes = [], []
        for mtype, start, stop in messages:
            if mtype == ATTRIBUTE:
                attributes.append((start, stop))
            elif mtype == CONTINUATION:
                continuations.append(start)
            elif mtype in _SINGLE:
                _check(mtype not in singles, f"object header message type {mtype:#x} repeated")
                singles[mtype] = (start, stop)
        self.continuations, self.attributes = tuple(continuations), tuple(attributes)
        self.dtype, self.space, self.layout = singles.get(DATATYPE), singles.get(DATASPACE), singles.get(LAYOUT)
        self.stab = singles[STAB][0] if STAB in singles else None
        self.kind = _kind_of(self.stab, self.dtype, self.space)


#: Message types whose whole bytes a reused block must share (checked once when parsed).
_STRUCTURAL = IGNORED - {NIL} | {DATATYPE}
#: Message types at most one of which an object header holds.
_SINGLE = frozenset({DATASPACE, DATATYPE, LAYOUT, STAB})
#: Message types this reader handles.
_KNOWN = IGNORED | _SINGLE | {ATTRIBUTE, CONTINUATION}


def _block(buf: bytes, pos: int, end: int) -> _Block:
    """The messages of the header block ``buf[pos:end]``: a known block's, when its
    structural bytes match, else a full parse."""
    key = (buf[pos:pos + 8], end - pos)
    known = _BLOCKS.get(key)
    if known is not None:
        for block in known:
            for start, stop, data in block.checks:
                if buf[pos + start:pos + stop] != data:
                    break
            else:
                return block
    block = _parse_block(buf, pos, end)
    if known is None:
        _remember(_BLOCKS, key, [block])
    else:
        if len(known) >= VARIANTS:
            del known[0]
        known.append(block)
    return block


def _parse_block(buf: bytes, pos: int, end: int) -> _Block:
    messages, ranges, p = [], [], pos
    while p < end:
        if p + 8 > end:
            raise Corrupt("object header message bounds")
        mtype, msize, flags = _MSG.unpack_from(buf, p)
        start, stop = p + 8, p + 8 + msize
        if stop > end or msize & 7 or flags & ~1:
            raise Unsupported(f"object header message bounds or flags {flags:#x} (shared message?)")
        if mtype not in _KNOWN or mtype in (STAB, CONTINUATION) and msize < 16:
            raise Unsupported(f"object header message type {mtype:#x}")
        if mtype in _STRUCTURAL:
            if mtype != DATATYPE:
                _check_ignored(buf, mtype, start, msize)
            checked = stop
        elif mtype == ATTRIBUTE:
            checked = _attribute_data(buf, start, stop)
        else:
            checked = start
        if ranges and ranges[-1][1] == p - pos:
            ranges[-1][1] = checked - pos
        else:
            ranges.append([p - pos, checked - pos])
        messages.append((mtype, start - pos, stop - pos))
        p = stop
    return _Block(tuple((a, b, buf[pos + a:pos + b]) for a, b in ranges), messages)


def _check_ignored(buf: bytes, mtype: int, pos: int, size: int) -> None:
    """Check a message this reader skips the way libhdf5 decodes it (h5py reads them)."""
    if mtype == FILL:
        version = buf[pos] if size else 0
        _check(1 <= version <= 3 and size >= 4, "fill value message version")
        if version == 3:
            flags = buf[pos + 1]
            _check(flags & ~0x3F == 0, "fill value message flags")
            if flags & 0x20:
                _check(size >= 6 and 6 + struct.unpack_from("<I", buf, pos + 2)[0] <= size, "fill value size")
        elif version == 1 or buf[pos + 3]:
            _check(size >= 8 and 8 + struct.unpack_from("<I", buf, pos + 4)[0] <= size, "fill value size")
    elif mtype == FILL_OLD:
        _check(size >= 4 and 4 + struct.unpack_from("<I", buf, pos)[0] <= size, "old fill value size")
    elif mtype == MTIME:
        _check(size >= 8 and buf[pos] == 1, "modification time message version")
    elif mtype == MTIME_OLD:
        _check(size >= 16 and buf[pos:pos + 14].isdigit(), "old modification time message")


def _links(f: _File, header: _Header) -> dict[str, int]:
    """A symbol-table group's members: name -> object header address, in name order.

    A B-tree of one leaf node (a trial group's) whose names were checked before
    in the same heap is read without walking it again (see :func:`_one_leaf`).
    """
    btree, heap = _QQ.unpack_from(f.buf, header.stab)
    names = _local_heap(f, heap)
    leaf = _one_leaf(f, btree)
    if leaf is not None:
        members = names.leaves.get(leaf[0])
        if members is not None:
            return dict(zip(members, leaf[1]))
    out: dict[str, int] = {}
    siblings: dict[int, tuple[int, int]] = {}
    _walk(f, btree, -1, names, out, [b""], siblings, b"", None)
    _check(all(right == UNDEFINED for _, right in siblings.values()), "B-tree sibling")
    if leaf is not None:
        _remember(names.leaves, leaf[0], tuple(out))
    return out


def _one_leaf(f: _File, addr: int) -> tuple[tuple, tuple[int, ...]] | None:
    """A B-tree of one node with one symbol table node: what its walk depends on
    besides the heap (keys, name offsets, cache types), and the entries' object
    header addresses; None for any other tree (or bytes that do not check out,
    left to :func:`_walk`)."""
    buf, eof = f.buf, f.eof
    if addr + _ONE_NODE.size > eof:
        return None
    sig, ntype, level, used, left, right, low, child, high = _ONE_NODE.unpack_from(buf, addr)
    if sig != b"TREE" or ntype or level or used != 1 or left != UNDEFINED or right != UNDEFINED \
            or child + 8 > eof:
        return None
    sig, version, nsym = _SNOD.unpack_from(buf, child)
    if sig != b"SNOD" or version != 1 or not 0 < nsym <= 2 * f.leaf_k or child + 8 + 40 * nsym > eof:
        return None
    entries = _entries(nsym).unpack_from(buf, child + 8)
    return (low, high, entries[::5], entries[2::5]), entries[1::5]


def _entries(nsym: int) -> struct.Struct:
    """The layout of ``nsym`` symbol table entries: name offset, header, cache type, scratch."""
    layout = _ENTRIES.get(nsym)
    if layout is None:
        layout = struct.Struct("<" + "QQI4xQQ" * nsym)
        _remember(_ENTRIES, nsym, layout)
    return layout


class _Names(dict):
    """The names of one local heap's data segment, by offset (found on first use).

    ``leaves`` remembers the member names of one-leaf B-trees checked against
    this heap, by what the check depends on (see :func:`_one_leaf`).
    """

    __slots__ = ("data", "leaves")

    def __missing__(self, offset: int) -> bytes:
        stop = self.data.find(b"\0", offset) if 0 <= offset < len(self.data) else -1
        if stop < 0:
            raise Corrupt("local heap offset of a name")
        name = self[offset] = self.data[offset:stop]
        return name


def _local_heap(f: _File, addr: int) -> _Names:
    """A local heap's names, checked as libhdf5 checks the heap (cached by its bytes:
    the trial groups of a file hold identical heaps at different addresses)."""
    buf = f.buf
    sig, version, size, free, data = _HEAP.unpack_from(buf, f.span(addr, 32))
    _check(sig == b"HEAP" and version == 0, "local heap signature")
    key = buf[addr + 8:addr + 24] + buf[f.span(data, size):data + size]
    names = _HEAPS.get(key)
    if names is not None:
        return names
    for _ in range(MAX_CHUNKS):  # the free list, checked as libhdf5 checks it
        if free == 1:  # its end
            break
        _check(free + 16 <= size, "local heap free list")
        offset, (free, length) = free, _QQ.unpack_from(buf, data + free)
        _check(free != 0 and offset + length <= size, "local heap free list")
    else:
        raise Unsupported("local heap free list too long")
    names = _Names()
    names.data, names.leaves = key[16:], {}
    _remember(_HEAPS, key, names)
    return names


def _walk(f: _File, addr: int, level: int, names: _Names, out: dict, last: list, siblings: dict,
          left: bytes, right: bytes | None) -> None:
    """Collect the symbol-table entries under B-tree node ``addr`` into ``out``.

    Checks what libhdf5's lookup by name relies on: every name lies between
    the keys of each node on its path (``key[i] < name <= key[i + 1]``), and
    names increase along the tree. ``last`` holds the last name collected,
    ``siblings`` the last node met on each level and its right sibling: the
    nodes of a level must link to each other in order (no cycle either).
    """
    buf = f.buf
    sig, ntype, nlevel, used, left_node, right_node = _TREE.unpack_from(buf, f.span(addr, 24))
    if sig != b"TREE" or ntype != 0 or not (nlevel == level or level < 0 and nlevel < MAX_DEPTH):
        raise Unsupported("group B-tree signature or level")
    previous = siblings.get(nlevel)
    if previous is None:
        _check(left_node == UNDEFINED, "B-tree sibling")
    else:
        _check(left_node == previous[0] and previous[1] == addr, "B-tree sibling")
    siblings[nlevel] = (addr, right_node)
    _check(used <= 2 * f.node_k and (used > 0 or level < 0), "B-tree entries")
    layout = _KEYS.get(used)
    if layout is None:
        layout = struct.Struct(f"<{2 * used + 1}Q")
        _remember(_KEYS, used, layout)
    keys = layout.unpack_from(buf, f.span(addr + 24, 16 * used + 8))
    bounds = [names[key] for key in keys[::2]]
    for i in range(used):
        child, low, high = keys[2 * i + 1], max(bounds[i], left), bounds[i + 1]
        if right is not None:
            high = min(high, right)
        if nlevel > 0:
            _walk(f, child, nlevel - 1, names, out, last, siblings, low, high)
        else:
            _leaf(f, child, names, out, last, low, high)


def _leaf(f: _File, addr: int, names: _Names, out: dict, last: list, low: bytes, high: bytes) -> None:
    """Collect the entries of the symbol table node ``addr`` into ``out``: names
    in ``(low, high]``, above ``last[0]`` and increasing (see :func:`_walk`)."""
    buf = f.buf
    sig, version, nsym = _SNOD.unpack_from(buf, f.span(addr, 8))
    _check(sig == b"SNOD" and version == 1 and 0 < nsym <= 2 * f.leaf_k, "symbol table node")
    entries = _entries(nsym).unpack_from(buf, f.span(addr + 8, 40 * nsym))
    previous = last[0]
    found = [names[offset] for offset in entries[::5]]
    for name in found:
        if not (low < name <= high and previous < name):
            raise Unsupported("B-tree names out of order")
        previous = name
    _check(max(entries[2::5]) <= 1, "soft link or unknown symbol table entry")
    last[0] = previous
    for name, obj in zip(found, entries[1::5]):
        text = _TEXT.get(name)
        out[text if text is not None else _member_name(name)] = obj


def _member_name(name: bytes) -> str:
    """A member's name as text, checked (no "/", not ".", UTF-8) and remembered."""
    _check(b"/" not in name and name != b".", "bad member name")
    try:
        text = name.decode()
    except UnicodeDecodeError:
        raise Unsupported("member name is not UTF-8") from None
    _remember(_TEXT, name, text)
    return text


class DirectGroup:
    """:class:`aa4xr.hdf5.Group` parsed from the file's bytes (see :func:`open_direct`)."""

    __slots__ = ("_file", "_header", "_links", "_kinds", "path", "features")

    def __init__(self, f: _File, header: _Header, path: str):
        self._file, self._header, self.path, self.features = f, header, path, f.features
        self._links: dict[str, int] | None = None
        self._kinds: dict[str, str] | None = None

    def _members(self) -> dict[str, int]:
        if self._links is None:
            try:
                self._links = _links(self._file, self._header)
            except MALFORMED as exc:
                raise Corrupt(f"malformed group {self.path} ({exc})") from exc
        return self._links

    def _child(self, name: str, kind: str) -> _Header:
        addr = self._members().get(name)
        if addr is None:
            raise KeyError(f"{self.path}: no member {name!r}")
        try:
            h = self._file.header(addr)
        except MALFORMED as exc:
            raise Corrupt(f"malformed object header {self.path}/{name} ({exc})") from exc
        if h.kind != kind:
            raise TypeError(f"{self.path}/{name} is not a {kind}")
        return h

    def members(self) -> dict[str, str]:
        """Link names -> "group", "dataset" or "other", in name order."""
        if self._kinds is None:
            header = self._file.header
            try:
                self._kinds = {name: header(addr).kind for name, addr in self._members().items()}
            except MALFORMED as exc:
                raise Corrupt(f"malformed member of {self.path} ({exc})") from exc
        return dict(self._kinds)

    def group(self, name: str) -> DirectGroup:
        """The member group ``name`` (KeyError when absent, TypeError when not a group)."""
        return DirectGroup(self._file, self._child(name, GROUP), f"{self.path.rstrip('/')}/{name}")

    def children(self, names: Iterable[str], datasets: Iterable[str]) -> list[Child]:
        """Members, attributes and some datasets of several member groups, in one call.

        Returns what ``[(g.members(), g.attrs(), {d: g.dataset(d) for d in
        datasets if g.members().get(d) == "dataset"}) for g in map(self.group,
        names)]`` returns, and counts the same in :attr:`features`, at a
        fraction of the calls: meant for the thousands of small trial groups
        of a unit file.

        Examples
        --------
        >>> from aa4xr.synthetic import sample_corpus
        >>> with open_direct(sorted(sample_corpus().glob("*/Site*.h5"))[0]) as root:
        ...     stim = root.group("Call1").group(next(iter(root.group("Call1").members())))
        ...     kinds, attrs, arrays = stim.children(["1"], ["spike_times"])[0]
        >>> sorted(kinds), list(arrays), "pre_time" in attrs
        (['spike_ids', 'spike_times'], ['spike_times'], True)
        """
        f, wanted = self._file, frozenset(datasets)
        numbers: list[str] = []
        strings: list[str] = []
        shapes: list[str] = []
        out = []
        for name in names:
            h = self._child(name, GROUP)
            try:
                kinds, arrays = {}, {}
                for member, maddr in _links(f, h).items():
                    kind, data, label = _member(f, maddr, member in wanted)
                    kinds[member] = kind
                    if data is not None:
                        arrays[member] = data
                        shapes.append(label)
                out.append((kinds, _attributes(f, h, numbers, strings), arrays))
            except MALFORMED as exc:
                raise Corrupt(f"malformed group {self.path}/{name} ({exc})") from exc
        features = self.features
        features.numbers.update(numbers)
        features.strings.update(strings)
        features.shapes.update(shapes)
        return out

    def attrs(self) -> dict[str, Any]:
        """Every attribute, in name order, as :meth:`aa4xr.hdf5.H5pyGroup.attrs` returns it."""
        numbers: list[str] = []
        strings: list[str] = []
        try:
            out = _attributes(self._file, self._header, numbers, strings)
        except MALFORMED as exc:
            raise Corrupt(f"malformed attribute of {self.path} ({exc})") from exc
        if numbers:
            self.features.numbers.update(numbers)
        if strings:
            self.features.strings.update(strings)
        return out

    def dataset(self, name: str) -> np.ndarray:
        """The member dataset ``name``: a new array of its stored shape and type."""
        h = self._child(name, DATASET)
        try:
            data, label = _dataset(self._file, _datatype(self._file.buf, *h.dtype), h.space, h.layout)
        except MALFORMED as exc:
            raise Corrupt(f"malformed dataset {self.path}/{name} ({exc})") from exc
        self.features.shapes[label] += 1
        return data


def _shape_label(type_name: str, shape: tuple[int, ...]) -> str:
    """``"float64 (n, 1)"``: how :class:`Features` counts a dataset (remembered in ``_Type.spaces``)."""
    return f"{type_name} {shape_kind(shape)}"


def _member(f: _File, addr: int, want: bool) -> tuple[str, np.ndarray | None, str]:
    """A member's kind and, when it is a dataset and ``want``, its values and
    :func:`_shape_label` (else None and "").

    A header of one block (a trial dataset's) is read through its cached
    :class:`_Block`, without building a :class:`_Header`; any other goes
    through :class:`_Header`, which also raises what is wrong.
    """
    buf, eof = f.buf, f.eof
    h = f.headers.get(addr)
    if h is None and addr + 16 <= eof:
        version, _, nmesgs, _, size = _PREFIX.unpack_from(buf, addr)
        pos = addr + 16
        end = pos + size
        if version == 1 and end <= eof:
            block = _block(buf, pos, end)
            if block.count == nmesgs and not block.continuations and block.kind is not None:
                if block.kind != DATASET or not want:
                    return block.kind, None, ""
                if block.type is None:
                    block.type = _datatype(buf, pos + block.dtype[0], pos + block.dtype[1])
                layout = None if block.layout is None else (pos + block.layout[0], pos + block.layout[1])
                return (DATASET, *_dataset(f, block.type, (pos + block.space[0], pos + block.space[1]), layout))
    if h is None:
        h = _Header(f, addr)
    if h.kind != DATASET or not want:
        return h.kind, None, ""
    return (DATASET, *_dataset(f, _datatype(buf, *h.dtype), h.space, h.layout))


def _dataset(f: _File, t: _Type, space: tuple[int, int], layout: tuple[int, int] | None) -> tuple[np.ndarray, str]:
    """The values of a contiguous or compact dataset of numbers of type ``t``
    whose dataspace and layout messages lie at ``space`` and ``layout``
    (``(start, stop)`` in the file), and how :class:`Features` counts it
    (:func:`_shape_label`)."""
    buf = f.buf
    pos, end = space
    key = buf[pos:end]
    shaped = t.spaces.get(key)
    if shaped is None:
        shape = _dataspace(key, 0, len(key))
        _check(t.kind == "number" and shape is not None, "dataset of strings or null dataspace")
        n = 1
        for d in shape:
            n *= d
        shaped = (shape, n, n * t.size, _shape_label(t.name, shape))
        _remember(t.spaces, key, shaped)
    shape, n, nbytes, label = shaped
    _check(layout is not None, "dataset without layout")
    pos, end = layout
    _check(end - pos >= 4 and buf[pos] == 3, "layout message version")
    if buf[pos + 1] == 1:  # contiguous
        _check(end - pos >= 18, "layout message too short")
        addr, size = _QQ.unpack_from(buf, pos + 2)
        if addr == UNDEFINED:
            _check(nbytes == 0, "contiguous dataset without storage (fill value)")
            return np.empty(shape, t.dtype), label
        _check(size == nbytes, "contiguous storage size")
        data = np.frombuffer(buf, t.dtype, n, f.span(addr, size))
        return (data.copy() if len(shape) == 1 else data.reshape(shape).copy()), label
    if buf[pos + 1] == 0:  # compact
        size = struct.unpack_from("<H", buf, pos + 2)[0]
        _check(size == nbytes and pos + 4 + size <= end, "compact storage size")
        return np.frombuffer(buf, t.dtype, n, pos + 4).reshape(shape).copy(), label
    raise Unsupported(f"layout class {buf[pos + 1]} (chunked or virtual)")


def _attribute_data(buf: bytes, pos: int, end: int) -> int:
    """Where the value of the attribute message ``buf[pos:end]`` starts: ``end``
    when its header does not parse (the whole message is then structural, and
    reading it raises)."""
    if end - pos < 8:
        return end
    version, nsize, tsize, ssize = _ATTR1.unpack_from(buf, pos)
    if version == 1:
        start = pos + 8 + (nsize + 7 & ~7) + (tsize + 7 & ~7) + (ssize + 7 & ~7)
    elif version == 2 or version == 3:
        start = pos + 8 + (version == 3) + nsize + tsize + ssize
    else:
        return end
    return start if start <= end else end


class _Plan:
    """How to read the attribute messages of a header block.

    ``entries`` holds ``(name, type, shape, n, start)`` per attribute in name
    order (``start``: where its value lies, relative to the block);
    ``numbers`` the type names of its numbers. When every attribute is an
    8-byte little-endian number scalar, ``unpack`` reads all their values at
    once and ``fast`` holds ``(name, make, index)``: the value of ``name`` is
    ``make(values[index])``.
    """

    __slots__ = ("entries", "numbers", "unpack", "fast")

    def __init__(self, entries: list[tuple]):
        entries.sort(key=_FIRST)
        _check(len({entry[0] for entry in entries}) == len(entries), "repeated attribute name")
        self.entries = tuple(entries)
        self.numbers = tuple(t.name for _, t, shape, _, _ in entries if t.kind == "number" and shape is not None)
        self.unpack = self.fast = None
        if all(t.scalar is not None and shape == () and t.dtype.str[0] == "<" for _, t, shape, _, _ in entries):
            by_offset = sorted(range(len(entries)), key=lambda i: entries[i][4])
            fmt, at = "<", 0
            for i in by_offset:
                t, start = entries[i][1], entries[i][4]
                fmt += f"{start - at}x{t.dtype.char}"
                at = start + 8
            self.unpack = struct.Struct(fmt).unpack_from
            self.fast = tuple((entries[i][0], entries[i][1].dtype.type, by_offset.index(i)) for i in range(len(entries)))


def _attribute_plan(buf: bytes, pos: int, block: _Block) -> _Plan:
    """How to read the attributes of the header block at ``pos``."""
    entries = []
    for start, stop in block.attributes:
        name, t, shape, n, data = _attribute_header(buf, pos + start, pos + stop)
        entries.append((name, t, shape, n, data - pos))
    return _Plan(entries)


def _attribute_header(buf: bytes, pos: int, end: int) -> tuple[str, _Type, tuple | None, int, int]:
    """Name, type, shape, number of values and data position of the attribute message ``buf[pos:end]``."""
    _check(end - pos >= 8, "attribute message too short")
    version, nsize, tsize, ssize = _ATTR1.unpack_from(buf, pos)
    if version == 1:
        p_name = 8
        p_type = p_name + (nsize + 7 & ~7)
        p_space = p_type + (tsize + 7 & ~7)
        start = p_space + (ssize + 7 & ~7)
    elif version == 2 or version == 3:
        _check(buf[pos + 1] == 0, "shared attribute datatype or dataspace")
        p_name = 9 if version == 3 else 8
        p_type, p_space = p_name + nsize, p_name + nsize + tsize
        start = p_space + ssize
    else:
        raise Unsupported(f"attribute message version {version}")
    _check(pos + start <= end, "attribute message bounds")
    key = buf[pos:pos + start]
    raw = key[p_name:p_name + nsize]
    _check(nsize > 0 and raw.find(b"\0") == nsize - 1, "attribute name")
    try:
        name = raw[:-1].decode()
    except UnicodeDecodeError:
        raise Unsupported("attribute name is not UTF-8") from None
    t = _decode_datatype(key, p_type, p_type + tsize)
    shape = _dataspace(key, p_space, p_space + ssize)
    n = 1
    for d in shape or ():
        n *= d
    if shape is not None:
        _check(pos + start + n * t.size <= end, "attribute data bounds")
    return name, t, shape, n, pos + start


def _attributes(f: _File, header: _Header, numbers: list, strings: list) -> dict[str, Any]:
    """Every attribute of an object, in name order: name -> value as h5py returns it.

    Appends the type of each number to ``numbers`` and the encoding of each
    string to ``strings``.
    """
    blocks = header.attributes
    if len(blocks) == 1:
        return _block_attributes(f, *blocks[0], numbers, strings)
    pairs = sorted((pair for pos, block in blocks for pair in _block_attributes(f, pos, block, numbers, strings).items()),
                   key=_FIRST)
    out = dict(pairs)
    _check(len(out) == len(pairs), "repeated attribute name")
    return out


def _block_attributes(f: _File, pos: int, block: _Block, numbers: list, strings: list) -> dict[str, Any]:
    """The attributes of the header block at ``pos``, in name order."""
    plan = block.plan
    if plan is None:
        plan = block.plan = _attribute_plan(f.buf, pos, block)
    numbers += plan.numbers
    if plan.fast is not None:
        values = plan.unpack(f.buf, pos)
        return {name: make(values[i]) for name, make, i in plan.fast}
    return {name: _attribute_value(f, t, shape, n, pos + start, strings) for name, t, shape, n, start in plan.entries}


def _attribute_value(f: _File, t: _Type, shape: tuple | None, n: int, start: int, strings: list) -> Any:
    """An attribute's value as h5py returns it, from its data at ``start``.

    Appends its string encoding to ``strings``.
    """
    if shape is None:
        return None
    buf, kind = f.buf, t.kind
    if kind == "number":
        if t.scalar is not None and not shape:
            return t.scalar(buf, start)
        value = np.frombuffer(buf, t.dtype, n, start).reshape(shape).copy()
        return value if shape else value[()]
    if kind == "fixed":
        texts, no_nul = _strings(buf[start:start + n * t.size], t, n)
        kind = f"fixed {STRPAD[t.pad]}"
        if kind == "fixed NULLTERM" and no_nul:
            kind += " without NUL"
    else:
        texts, kind = [], "vlen"
        for i in range(n):
            text = f.vlen(buf, start + 16 * i).split(b"\0", 1)[0]
            if t.utf8:
                try:
                    texts.append(text.decode())
                except UnicodeDecodeError:
                    raise Unsupported("variable-length UTF-8 string is not UTF-8") from None
            else:
                texts.append(text.decode("utf-8", "replace"))
    strings.append(kind)
    if not shape:
        return texts[0]
    out = np.empty(n, dtype=object)
    out[:] = texts
    return out.reshape(shape)


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
        raise Corrupt(f"malformed structure ({exc})") from exc
    _check(root.kind == GROUP, "root is not a group")
    yield DirectGroup(f, root, "/")
