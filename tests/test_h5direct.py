"""The direct HDF5 reader against h5py: same tree, same values and types, or Unsupported.

Every comparison reads the same bytes with :func:`aa4xr.hdf5.open_h5py` (libhdf5)
as the independent reference.
"""

from __future__ import annotations

import multiprocessing
import re
import struct
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from aa4xr.h5direct import open_direct
from aa4xr.hdf5 import Unsupported, open_h5py
from aa4xr.read import UnitFileError, read_unit

PADS = {"NULLTERM": h5py.h5t.STR_NULLTERM, "NULLPAD": h5py.h5t.STR_NULLPAD, "SPACEPAD": h5py.h5t.STR_SPACEPAD}


def walk(group) -> dict:
    """Everything a Group offers: members, attributes, datasets, subgroups (depth first)."""
    members = group.members()
    out = {"members": members, "attrs": group.attrs()}
    for name, kind in members.items():
        if kind == "group":
            out[name] = walk(group.group(name))
        elif kind == "dataset":
            out[name] = group.dataset(name)
    return out


def read(opener, path) -> tuple[dict, dict]:
    """The walk of a file and what its reader counted."""
    with opener(path) as root:
        tree = walk(root)
        f = root.features
        return tree, {"superblock": f.superblock, "strings": dict(f.strings), "numbers": dict(f.numbers),
                      "shapes": dict(f.shapes)}


def assert_same(a, b, where="/"):
    """Equal values of the same Python and NumPy types (NaN equal to NaN), dict order included."""
    assert type(a) is type(b), (where, type(a), type(b), a, b)
    if isinstance(a, dict):
        assert list(a) == list(b), (where, list(a), list(b))
        for key in a:
            assert_same(a[key], b[key], f"{where}{key}/")
    elif isinstance(a, tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}{i}/")
    elif isinstance(a, np.ndarray):
        assert (a.dtype, a.shape) == (b.dtype, b.shape), (where, a.dtype, b.dtype, a.shape, b.shape)
        if a.dtype == object:
            assert [type(v) for v in a.flat] == [type(v) for v in b.flat] and a.tolist() == b.tolist(), where
        else:
            np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, np.generic) and a.dtype.kind == "f":
        assert a.tobytes() == b.tobytes(), (where, a, b)
    elif isinstance(a, float) and a != a:
        assert b != b, (where, a, b)
    else:
        assert a == b, (where, a, b)


def assert_direct_matches(path, *, must_parse: bool) -> bool:
    """Direct and h5py agree on ``path`` (or direct raises Unsupported). Returns whether direct parsed it."""
    reference = read(open_h5py, path)
    try:
        got = read(open_direct, path)
    except Unsupported:
        assert not must_parse, f"{path}: the direct reader fell back"
        return False
    assert_same(got[0], reference[0])
    assert got[1] == reference[1]
    return True


# ------------------------------------------------------------------ the writers' files


def test_every_synthetic_file_is_parsed_directly_and_equals_h5py(corpus):
    """Both writers' variants (MATLAB and h5py), summary groups, Old_Units files."""
    paths = sorted(corpus.root.rglob("*.h5"))
    assert len(paths) > len(corpus.units)  # Old_Units files too
    for path in paths:
        assert_direct_matches(path, must_parse=True)


def test_writers_variants_are_met(corpus):
    """The comparison above covers the encodings it should (counted by the h5py reader)."""
    strings, shapes, numbers = set(), set(), set()
    for path in sorted(corpus.root.rglob("Site*.h5")):
        _, features = read(open_h5py, path)
        strings |= set(features["strings"])
        shapes |= set(features["shapes"])
        numbers |= set(features["numbers"])
    assert {"vlen", "fixed NULLPAD", "fixed NULLTERM without NUL"} <= strings
    assert {"float64 (n, 1)", "float64 (1, 1)", "float64 (1, n)", "float64 (n,)", "int64 scalar"} <= shapes
    assert {"int64", "float64"} <= numbers


@pytest.mark.parametrize("opener", [open_direct, open_h5py])
def test_children_returns_what_the_protocol_returns(corpus, opener):
    """The bulk method equals group/members/attrs/dataset calls, and counts the same, in both readers."""
    for path in sorted(corpus.root.glob("*/Site*.h5"))[:6]:
        with opener(path) as bulk, opener(path) as single:
            protocols = [name for name in bulk.members() if name.startswith("Call")]
            assert protocols
            for protocol in protocols:
                for stim in bulk.group(protocol).members():
                    names = list(bulk.group(protocol).group(stim).members())
                    got = bulk.group(protocol).group(stim).children(names, ["spike_times", "spike_ids"])
                    expected = []
                    for name in names:
                        g = single.group(protocol).group(stim).group(name)
                        expected.append((g.members(), g.attrs(),
                                         {d: g.dataset(d) for d, kind in g.members().items() if kind == "dataset"}))
                    assert_same(dict(enumerate(got)), dict(enumerate(expected)))
            assert (bulk.features.numbers, bulk.features.strings, bulk.features.shapes) == (
                single.features.numbers, single.features.strings, single.features.shapes)


@pytest.fixture(params=["direct", "h5py"])
def reader_env(request, monkeypatch):
    """The suite's reads through each reader (``$AA4XR_READER``)."""
    monkeypatch.setenv("AA4XR_READER", request.param)
    return request.param


def test_read_unit_through_either_reader(corpus, reader_env):
    for unit in corpus.units.itertuples():
        got = read_unit(corpus.root / unit.animal / unit.file)
        assert got.features.reader == reader_env
        assert got.features.fallback == ""
        truth = corpus.trials[corpus.trials["neuron"] == unit.neuron]
        assert got.trials["count"].sum() == truth["count"].sum() == got.spike_times.size
        np.testing.assert_array_equal(np.sort(got.spike_times), np.sort(np.concatenate(
            [corpus.trial_spikes(i) for i in np.flatnonzero(corpus.trials["neuron"] == unit.neuron)])))


def test_read_unit_identical_through_both_readers(corpus):
    for unit in corpus.units.itertuples():
        path = corpus.root / unit.animal / unit.file
        fast, slow = read_unit(path, reader="direct"), read_unit(path, reader="h5py")
        pd.testing.assert_frame_equal(fast.trials, slow.trials)
        pd.testing.assert_frame_equal(fast.groups, slow.groups)
        np.testing.assert_array_equal(fast.spike_times, slow.spike_times)
        assert_same(fast.attrs, slow.attrs)
        assert (fast.features.reader, slow.features.reader) == ("direct", "h5py")
        assert fast.features.writer() == slow.features.writer() == ("MATLAB" if unit.matlab_style else "h5py")


def test_read_unit_falls_back_per_file(corpus, tmp_path):
    """A unit file re-saved in HDF5's latest format is read through h5py, fallback recorded."""
    unit = corpus.units.iloc[0]
    source = corpus.root / unit["animal"] / unit["file"]
    path = tmp_path / unit["file"]
    with h5py.File(source, "r") as src, h5py.File(path, "w", libver="latest") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for name in src:
            src.copy(src[name], dst, name)
    got = read_unit(path, reader="direct")
    assert got.features.reader == "h5py" and "superblock" in got.features.fallback
    expected = read_unit(source)
    np.testing.assert_array_equal(got.spike_times, expected.spike_times)
    pd.testing.assert_frame_equal(got.trials, expected.trials)


# ------------------------------------------------------------------ files made here with h5py


def _fixed(text: bytes, pad: str, utf8: bool = False, size: int | None = None) -> tuple[np.ndarray, h5py.h5t.TypeID]:
    size = size or max(1, len(text))
    tid = h5py.h5t.C_S1.copy()
    tid.set_size(size)
    tid.set_strpad(PADS[pad])
    if utf8:
        tid.set_cset(h5py.h5t.CSET_UTF8)
    return np.array(text, dtype=f"S{size}"), tid


def _raw_attr(obj, name: str, data: np.ndarray, tid: h5py.h5t.TypeID) -> None:
    """An attribute stored byte for byte (no conversion on write)."""
    space = h5py.h5s.create_simple(data.shape) if data.shape else h5py.h5s.create(h5py.h5s.SCALAR)
    h5py.h5a.create(obj.id, name.encode(), tid, space).write(np.ascontiguousarray(data), mtype=tid)


def _build_variety(f: h5py.File) -> None:
    g = f.create_group("g")
    g.attrs["be_f8"] = np.array(1.5, ">f8")
    g.attrs["be_i4"] = np.array([1, -2, 3], ">i4")
    g.attrs["u1"] = np.uint8(200)
    g.attrs["big_i8"] = np.int64(-(2**62) - 3)
    g.attrs["big_be_i8"] = np.array(2**62 + 5, ">i8")
    g.attrs["max_u8"] = np.uint64(2**64 - 1)
    g.attrs["nan_payload"] = np.frombuffer(b"\x01\x00\x00\x00\x00\x00\xf8\x7f", "<f8")[0]
    g.attrs["f4"] = np.float32(0.1)
    g.attrs["grid"] = np.arange(6.0).reshape(2, 3)
    g.attrs["empty_f"] = h5py.Empty("f8")
    g.attrs["empty_s"] = h5py.Empty(h5py.string_dtype())
    g.attrs["vlen"] = "ascii text"
    g.attrs["vlen_utf8"] = "é ☃"
    g.attrs.create("vlen_arr", ["a", "", "ccc"], dtype=h5py.string_dtype("ascii"))
    g.attrs["none"] = "None"
    for pad in PADS:
        _raw_attr(g, f"fixed_{pad}", *_fixed(b"ab\0c  ", pad))
        _raw_attr(g, f"full_{pad}", *_fixed(b"abc", pad))
        _raw_attr(g, f"utf8_{pad}", *_fixed("é\0 ".encode(), pad, utf8=True))
    _raw_attr(g, "fixed_array", np.array([b"x", b"yy\0"], "S3"), _fixed(b"", "NULLTERM", size=3)[1])
    g.create_dataset("col", data=np.arange(5.0).reshape(5, 1))
    g.create_dataset("row", data=np.arange(5.0).reshape(1, 5))
    g.create_dataset("one", data=np.full((1, 1), -999.0))
    g.create_dataset("scalar", data=np.int64(-999))
    g.create_dataset("be", data=np.arange(4, dtype=">f8"))
    g.create_dataset("small_ints", data=np.arange(4, dtype="<i2"))
    g.create_dataset("u8", data=np.array([2**64 - 1], "<u8"))
    g.create_dataset("zero", shape=(0,), dtype="f8")
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.COMPACT)
    space = h5py.h5s.create_simple((3,))
    h5py.h5d.create(g.id, b"compact", h5py.h5t.IEEE_F64LE, space, dcpl=dcpl).write(
        h5py.h5s.ALL, h5py.h5s.ALL, np.array([1.0, 2.0, 3.0]))
    many = f.create_group("many")  # a B-tree of several levels
    for i in range(300):
        many.create_group(str(i)).attrs["i"] = i
    for i in range(40):  # attributes added after the members: continuation blocks
        many.attrs[f"late{i}"] = float(i)
    f["g"].attrs["late"] = "added last"


def _libver_latest(f: h5py.File) -> None:
    f.create_group("x").attrs["a"] = 1.0


def _chunked(f: h5py.File) -> None:
    f.create_dataset("d", data=np.arange(10.0), chunks=(5,))


def _compressed(f: h5py.File) -> None:
    f.create_dataset("d", data=np.arange(10.0), compression="gzip")


def _soft_link(f: h5py.File) -> None:
    f.create_dataset("d", data=np.arange(3.0))
    f["s"] = h5py.SoftLink("/d")


def _track_order(f: h5py.File) -> None:
    f.create_group("t", track_order=True).create_group("1")


def _unwritten(f: h5py.File) -> None:
    f.create_dataset("d", shape=(3,), dtype="f8", fillvalue=7.0)


def _committed_type(f: h5py.File) -> None:
    f["t"] = np.dtype("f8")
    f.create_dataset("d", data=np.arange(3.0), dtype=f["t"])


def _compound(f: h5py.File) -> None:
    f.attrs["c"] = np.array((1, 2.0), dtype=[("a", "i4"), ("b", "f8")])


@pytest.mark.parametrize("build, libver, must_parse", [
    (_build_variety, None, True),
    (_libver_latest, "latest", False),
    (_chunked, None, False),
    (_compressed, None, False),
    (_soft_link, None, False),
    (_track_order, None, False),
    (_unwritten, None, False),
    (_committed_type, None, False),
    (_compound, None, False),
])
def test_files_written_here(tmp_path, build, libver, must_parse):
    path = tmp_path / "f.h5"
    with h5py.File(path, "w", libver=libver) as f:
        build(f)
    parsed = assert_direct_matches(path, must_parse=must_parse)
    if not must_parse:
        assert not parsed, f"{build.__name__}: expected the direct reader to fall back"


def test_cached_header_layouts_never_share_what_differs(tmp_path):
    """Header blocks and attribute plans are reused across groups and files by their
    structural bytes: groups whose headers differ only in a value, an attribute's
    name, its type (float64 vs int64, same size), its string size or its shape, or
    in a dataset's type, shape or members (one-leaf B-trees are remembered per
    local heap) must each read as h5py reads them, whatever was read before in
    the same process."""
    variants = {
        "values": lambda g, i: g.attrs.create("x", float(i) + 0.5, dtype="f8"),
        "name": lambda g, i: g.attrs.create("ab"[i % 2], 1.0, dtype="f8"),
        "type": lambda g, i: g.attrs.create("x", i, dtype=["f8", "i8", "u8", ">f8"][i % 4]),
        "strlen": lambda g, i: g.attrs.create("x", b"ab"[: 1 + i % 2], dtype=f"S{1 + i % 2}"),
        "shape": lambda g, i: g.attrs.create("x", np.arange(1 + i % 2, dtype="f8")),
        "data": lambda g, i: g.create_dataset("d", data=np.arange(i % 3 + 1, dtype=["f8", "i8", "<u4"][i % 3])),
        "dshape": lambda g, i: g.create_dataset("d", data=np.full([(2,), (2, 1), (1, 2), ()][i % 4], 1.5 + i)),
        "members": lambda g, i: [g.create_dataset(n, data=[float(i)]) for n in ("d", "e", "c")[: 1 + i % 3]],
    }
    paths = []
    for kind, make in variants.items():
        for copy in range(2):  # the same layouts in a second file: the caches outlive a file
            path = tmp_path / f"{kind}{copy}.h5"
            with h5py.File(path, "w") as f:
                for i in range(8):
                    group = f.create_group(f"g{i}")
                    group.attrs.create("y", 7.0 * i + copy)
                    make(group, i + copy)
            paths.append(path)
    for path in paths:
        assert assert_direct_matches(path, must_parse=True)
        with open_direct(path) as root, open_h5py(path) as reference:
            names = sorted(root.members())
            assert_same(tuple(root.children(names, ["d"])), tuple(reference.children(names, ["d"])))


def test_remembered_member_lists_still_check_the_entries(tmp_path):
    """One-leaf B-trees are remembered per local heap: a group whose heap equals
    that of a group read before, but whose two symbol table entries are swapped
    (out of name order), is refused, never read as the first group's members."""
    path, bad = tmp_path / "f.h5", tmp_path / "swapped.h5"
    with h5py.File(path, "w") as f:
        for group in ("g0", "g1"):
            f.create_dataset(f"{group}/d", data=[1.0])
            f.create_dataset(f"{group}/e", data=[2.0, 3.0])
    with open_direct(path) as root:
        assert root.group("g0").members() == {"d": "dataset", "e": "dataset"}  # remembered
        header_of_d = struct.pack("<Q", root.group("g1")._members()["d"])
    data = bytearray(path.read_bytes())
    snod = next(m.start() for m in re.finditer(b"SNOD", data) if data[m.start() + 16:m.start() + 24] == header_of_d)
    first, second = slice(snod + 8, snod + 48), slice(snod + 48, snod + 88)  # 40-byte entries after 8 bytes
    data[first], data[second] = data[second], data[first]
    bad.write_bytes(bytes(data))
    with open_direct(bad) as root, pytest.raises(Unsupported, match="out of order"):
        root.group("g1").members()


def test_variety_counts_what_it_met(tmp_path):
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        _build_variety(f)
    _, features = read(open_direct, path)
    assert features["strings"]["fixed NULLTERM without NUL"] == 1  # full_NULLTERM
    assert features["strings"]["fixed SPACEPAD"] == 3
    assert features["shapes"]["float64 (1, 1)"] == 1 and features["shapes"]["int64 scalar"] == 1


def test_not_hdf5_is_unsupported(tmp_path):
    path = tmp_path / "x.h5"
    path.write_bytes(b"not an HDF5 file" * 10)
    with pytest.raises(Unsupported):
        with open_direct(path):
            pass


DTYPES = ["<i1", ">i2", "<u2", ">i4", "<u4", "<i8", ">u8", "<f4", ">f4", "<f8", ">f8"]
SHAPES = [(), (1,), (4,), (3, 1), (1, 3), (2, 3), (0,)]


@st.composite
def numeric(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(st.sampled_from(SHAPES))
    return draw(hnp.arrays(dtype, shape))


@st.composite
def fixed_string(draw):
    size = draw(st.integers(1, 8))
    shape = draw(st.sampled_from([(), (2,)]))
    raw = [draw(st.binary(min_size=size, max_size=size)) for _ in range(int(np.prod(shape)))]
    data = np.array(raw, f"S{size}").reshape(shape)
    return data, draw(st.sampled_from(list(PADS))), draw(st.booleans())


# h5py cannot write a NUL in a variable-length string
VLEN_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=6)
VLEN_BYTES = st.binary(max_size=6).filter(lambda b: b"\0" not in b)


@given(attrs=st.lists(st.one_of(numeric(), fixed_string(), VLEN_TEXT, VLEN_BYTES,
                                st.lists(VLEN_TEXT, min_size=1, max_size=3)), max_size=6),
       datasets=st.lists(st.tuples(numeric(), st.sampled_from(["contiguous", "compact"])), max_size=3))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_attributes_and_datasets(attrs, datasets):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.h5"
        with h5py.File(path, "w") as f:
            g = f.create_group("g")
            for i, value in enumerate(attrs):
                name = f"a{i}"
                if isinstance(value, tuple):
                    data, pad, utf8 = value
                    tid = _fixed(b"", pad, utf8, size=data.dtype.itemsize)[1]
                    _raw_attr(g, name, data, tid)
                elif isinstance(value, list):
                    g.attrs.create(name, value, dtype=h5py.string_dtype())
                elif isinstance(value, (str, bytes)):
                    g.attrs.create(name, value, dtype=h5py.string_dtype("utf-8" if isinstance(value, str) else "ascii"))
                else:
                    g.attrs.create(name, value)
            for i, (data, layout) in enumerate(datasets):
                dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
                if layout == "compact":
                    dcpl.set_layout(h5py.h5d.COMPACT)
                space = h5py.h5s.create_simple(data.shape) if data.shape else h5py.h5s.create(h5py.h5s.SCALAR)
                did = h5py.h5d.create(g.id, f"d{i}".encode(), h5py.h5t.py_create(data.dtype), space, dcpl=dcpl)
                if data.size:
                    did.write(h5py.h5s.ALL, h5py.h5s.ALL, np.ascontiguousarray(data))
        assert_direct_matches(path, must_parse=True)


# ------------------------------------------------------------------ corrupted files


def _h5py_walk(path: str, sender) -> None:
    """Send h5py's walk of ``path``, or why it failed."""
    try:
        sender.send(read(open_h5py, path))
    except Exception as exc:  # noqa: BLE001 - any failure is an outcome to record
        sender.send(f"{type(exc).__name__}: {exc}")


def _h5py_reference(path: Path, timeout: float = 60.0) -> tuple | str:
    """h5py's walk of a file in a fresh process, or a str saying why there is none.

    On corrupt bytes libhdf5 may crash, loop for ever (seen), or carry state over
    to the next file (one long-lived process was seen to report a big-endian
    dataset as little-endian after hundreds of corrupt files).
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["h5py", "aa4xr.hdf5", "numpy"])
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_h5py_walk, args=(str(path), sender))
    process.start()
    sender.close()
    try:
        result = receiver.recv() if receiver.poll(timeout) else f"h5py still reading after {timeout} s"
    except EOFError:  # the process ended without a word: killed by a signal, or a failure of its own
        process.join()
        if process.exitcode is None or process.exitcode >= 0:
            raise RuntimeError(f"the h5py reference process failed (exit code {process.exitcode})") from None
        result = f"h5py crashed (signal {-process.exitcode})"
    process.kill()
    process.join()
    return result


def _mutations(size: int, rng: np.random.Generator, n: int):
    for _ in range(n):
        kind = rng.integers(3)
        if kind == 0:
            yield "flip", rng.integers(size, size=1)
        elif kind == 1:
            start = int(rng.integers(size))
            yield "zero", np.arange(start, min(size, start + int(rng.integers(1, 16))))
        else:
            yield "truncate", int(rng.integers(96, size))


@pytest.fixture(scope="module")
def fuzz_files(tmp_path_factory):
    """Small unit files of both writers."""
    from aa4xr.synthetic import write_corpus

    truth = write_corpus(tmp_path_factory.mktemp("tiny"), "sample", seed=3, processes=1, animals=("LblBlu2028M",),
                         units_per_animal=4, stims_per_animal=2, pool=3, trials=(2, 3))
    styles = truth.units.drop_duplicates("matlab_style")
    return [truth.root / row.animal / row.file for row in styles.itertuples()]


def test_corrupted_files_never_misread(fuzz_files, tmp_path):
    """Flipped, zeroed or truncated bytes: the direct reader returns what h5py reads
    from the same bytes, or raises Unsupported; where h5py fails and direct reads,
    direct's answer is the intact file's (the damage hit nothing it needs)."""
    rng = np.random.default_rng(13)
    outcomes = {"same": 0, "unsupported": 0, "intact": 0}
    for source in fuzz_files:
        intact = read(open_direct, source)
        original = np.frombuffer(source.read_bytes(), np.uint8)
        for i, (kind, where) in enumerate(_mutations(original.size, rng, 45)):
            data = original.copy()
            if kind == "flip":
                data[where] ^= np.uint8(1) << rng.integers(8, size=where.size).astype(np.uint8)
            elif kind == "zero":
                data[where] = 0
            else:
                data = data[:where]
            path = tmp_path / f"{i}_{source.name}"
            path.write_bytes(data.tobytes())
            try:
                got = read(open_direct, path)
            except Unsupported:
                outcomes["unsupported"] += 1
                continue
            reference = _h5py_reference(path)
            outcome = "intact" if isinstance(reference, str) else "same"  # a str: h5py could not read it
            try:
                assert_same(got[0], intact[0] if outcome == "intact" else reference[0])
            except AssertionError as exc:
                other = f"the intact file (h5py: {reference})" if outcome == "intact" else "h5py"
                raise AssertionError(f"{source.name}, {kind} {where}: direct read differs from {other}: {exc}") \
                    from exc
            outcomes[outcome] += 1
            try:
                read_unit(path)
            except UnitFileError as exc:
                assert path.name in str(exc)
    assert outcomes["unsupported"] > 0 and outcomes["same"] > 0, outcomes


def test_truncated_copy_of_a_real_unit_file(corpus, tmp_path):
    """Through read_unit: a file cut in half is a UnitFileError naming it."""
    unit = corpus.units.iloc[0]
    path = tmp_path / unit["file"]
    data = (corpus.root / unit["animal"] / unit["file"]).read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(UnitFileError, match=unit["file"]):
        read_unit(path)

