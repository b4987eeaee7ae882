"""The synthetic corpus: every AA4 variant is on disk and the ground truth matches it.

Files are read back with h5py and soundfile directly, never through an aa4xr reader.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from aa4xr import synthetic
from aa4xr.synthetic import ONE_ARRAY, SILENT, WAV_RATE, sample_corpus, write_corpus

NAME = re.compile(r"^Site(\d+)_(?:L(\d+))?(?:R(\d+))?_e(\d+)_s(\d+)(?:_ss(\d+))?\.h5$")
PROTOCOLS = {"Call1", "Call2", "Call1c"}


def decode(value):
    """str / bytes_ / 1-element byte array -> str; numbers unchanged."""
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(-1)[0]
    return value.decode() if isinstance(value, bytes) else value


def kind(value) -> str:
    """The encoding of one attribute value as stored."""
    if isinstance(value, str):
        return "str"
    if isinstance(value, np.bytes_):
        return "bytes"
    if isinstance(value, np.ndarray):
        return "array" if value.dtype.kind == "S" else f"array-{value.dtype.kind}"
    return type(value).__name__


def read_file(path: Path) -> tuple[dict, list[dict]]:
    """Root attributes and one record per trial group of a unit file."""
    records = []
    with h5py.File(path, "r") as f:
        root = dict(f.attrs)
        for protocol in f:
            if protocol in ("class_info", "extra_info"):
                continue
            for number, stim in f[protocol].items():
                group_attrs = dict(stim.attrs)
                for name, trial in stim.items():
                    times, ids = trial["spike_times"][()], trial["spike_ids"][()]
                    records.append({
                        "protocol": protocol, "number": int(number), "trial_name": int(name),
                        "group_attrs": group_attrs, **dict(trial.attrs),
                        "times": times, "ids": ids, "matlab": path.stem.count("_ss") == 1,
                    })
    return root, records


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The sample preset, written with worker processes."""
    return write_corpus(tmp_path_factory.mktemp("aa4") / "root", processes=2)


@pytest.fixture(scope="module")
def files(corpus):
    """Every unit file read back: {neuron: (root attrs, trial records)}."""
    return {row.neuron: read_file(corpus.root / row.animal / row.file) for row in corpus.units.itertuples()}


def test_layout_holds_unit_files_wavs_and_junk(corpus):
    root = corpus.root
    animals = sorted(corpus.units["animal"].unique())
    assert len(animals) == 3 and ONE_ARRAY in animals
    assert (root / "README.txt").is_file() and not list((root / "CRCNSCode").glob("*.h5"))
    for animal in animals:
        folder = root / animal
        units = corpus.units.query("animal == @animal")
        assert {p.name for p in folder.glob("Site*.h5")} == set(units["file"])
        old = {p.name for p in folder.glob("Old_Units*.h5")}
        assert old and old == set(units["old_units"]) - {""}
        assert (folder / "notes.txt").is_file() and list(folder.glob("*.mat"))
        assert (folder / "wavfiles" / "readme.txt").is_file()


def test_unit_names_and_depths(corpus, files):
    units = corpus.units
    parsed = units["file"].str.extract(NAME.pattern)
    assert parsed.notna()[[0, 3, 4]].all().all()
    assert parsed[5].notna().any() and parsed[5].isna().any()  # _ss and online sorts
    np.testing.assert_array_equal(parsed[3].astype(int), units["electrode"])
    np.testing.assert_array_equal(parsed[4].astype(int), units["sort_id"])
    np.testing.assert_array_equal(parsed[5].astype(float), units["subsort_id"])
    np.testing.assert_array_equal(parsed[1].astype(float), units["ldepth"])
    np.testing.assert_array_equal(parsed[2].astype(float), units["rdepth"])
    one = units["animal"] == ONE_ARRAY
    assert parsed.loc[one, 1].isna().all() and parsed.loc[~one, 1].notna().all()
    assert units.loc[one, "electrode"].max() <= 16 and units.loc[~one, "electrode"].max() > 16
    for row in units.itertuples():
        attrs = files[row.neuron][0]
        assert ("ldepth" in attrs) == (row.animal != ONE_ARRAY) and "rdepth" in attrs
    shared = units.groupby("file")["animal"].nunique()
    assert (shared > 1).any(), "the same file name should occur in two animals"
    assert (units["sex"] == units["animal"].str[-1]).all()


def _hdf5_kind(obj, key) -> str:
    """How an attribute is stored: its HDF5 type, padding and shape."""
    tid, shape = obj.attrs.get_id(key).get_type(), obj.attrs.get_id(key).shape
    if isinstance(tid, h5py.h5t.TypeStringID):
        if tid.is_variable_str():
            kind = "vlen " + ("ascii" if tid.get_cset() == h5py.h5t.CSET_ASCII else "utf8")
        else:
            pad = {h5py.h5t.STR_NULLTERM: "NULLTERM", h5py.h5t.STR_NULLPAD: "NULLPAD"}[tid.get_strpad()]
            kind = f"fixed {pad}"
    else:
        kind = obj.attrs.get_id(key).dtype.name
    return kind + ("" if shape == () else f" {shape}")


def test_root_attribute_variants(corpus, files):
    kinds = {True: set(), False: set()}
    sort_types, present = set(), {"tank_name": set(), "source_directory": set()}
    for row in corpus.units.itertuples():
        attrs = files[row.neuron][0]
        with h5py.File(corpus.root / row.animal / row.file, "r") as f:
            kinds[row.matlab_style] |= {_hdf5_kind(f, key) for key in f.attrs}
            if row.matlab_style:  # MATLAB: sized to the text, no NUL byte
                tid = f.attrs.get_id("sortType").get_type()
                assert tid.get_size() == len(row.sort_type_raw)
        assert float(decode(attrs["electrode"])) == row.electrode
        if row.matlab_style:
            assert isinstance(attrs["sortid"], np.float64) and attrs["sortid"] == row.subsort_id
            assert "tank_name" not in attrs
        else:
            assert decode(attrs["sortid"]) == row.sort_id and "tank_name" in attrs
        assert decode(attrs["sortType"]) == row.sort_type_raw and decode(attrs["site"]) == row.site
        sort_types.add(row.sort_type_raw)
        for key in present:
            present[key].add(key in attrs)
    assert kinds[True] == {"float64", "fixed NULLTERM"}
    assert kinds[False] == {"int64", "int64 (1,)", "vlen ascii", "fixed NULLPAD", "fixed NULLPAD (1,)"}
    assert sort_types == {"single", "singl", "multi", "noise", "tdt"}
    assert set(corpus.units["sort_type"]) == {"single", "multi", "noise", "tdt"}
    assert present == {"tank_name": {True, False}, "source_directory": {True, False}}
    assert corpus.units["matlab_style"].any() and not corpus.units["matlab_style"].all()


def test_protocols_and_summary_groups(corpus):
    reruns = 0
    for row in corpus.units.itertuples():
        with h5py.File(corpus.root / row.animal / row.file, "r") as f:
            protocols = set(f) - {"class_info", "extra_info"}
            assert protocols <= PROTOCOLS and {"class_info", "extra_info"} <= set(f)
            # the rewritten site (like WhiWhi4522M Site1) keeps Call1c only, the aborted Call1 in Old_Units
            assert ("Call1" in protocols) == (row.old_units == "")
            if row.old_units:
                with h5py.File(corpus.root / row.animal / row.old_units, "r") as old:
                    assert "Call1" in old
            for protocol in protocols:
                assert f[f"class_info/{protocol}/mean_rate"].ndim == 1
                assert len(f[f"class_info/{protocol}/coherence"]) > 0
                assert len(f[f"extra_info/{protocol}/sections_data"]) > 0
                assert len(f[f"extra_info/{protocol}/inter_spike_interval"]) > 0
            if "Call1c" in f and "Call1" in f:
                reruns += 1
                md5 = lambda p: {decode(g.attrs["stim_md5"]) for g in f[p].values()}  # noqa: E731
                assert md5("Call1c") <= md5("Call1")
    assert reruns == (corpus.units["rerun"] & (corpus.units["old_units"] == "")).sum() > 0
    twice = corpus.pairs[corpus.pairs["protocols"].str.contains(",")]
    assert len(twice) and (twice["protocols"] == "Call1,Call1c").all()


def test_stimulus_group_attributes(corpus, files):
    expected = set(synthetic.STIM_ATTRS) | {"zscore", "tstat", "pvalue"}
    seen = {"stim_type": set(), "callid": set(), "tdt_wavfile": set(), "encoding": set(), "omitted": set()}
    for _, records in files.values():
        for rec in records:
            attrs = rec["group_attrs"]
            empty = {k for k, v in attrs.items() if decode(v) == ""}
            if rec["matlab"]:  # MATLAB omits empty strings
                assert not empty and expected - set(attrs) <= {"stim_source_sex"}
                seen["omitted"].add(len(expected - set(attrs)))
            else:
                assert set(attrs) == expected and empty <= {"stim_source_sex"}
            for key in ("stim_type", "callid"):
                seen[key].add(decode(attrs[key]))
            seen["tdt_wavfile"].add(decode(attrs["tdt_wavfile"]) == "None")
            seen["encoding"] |= {kind(v) for v in attrs.values() if isinstance(decode(v), str)}
    assert seen["stim_type"] == {"song", "call", "mlnoise"}
    assert seen["callid"] == set(synthetic.CALL_TYPES) | {"None"}
    assert seen["tdt_wavfile"] == {True, False} and seen["encoding"] == {"str", "bytes", "array"}
    assert seen["omitted"] == {0, 1}


def test_ground_truth_equals_files(corpus, files):
    trials = corpus.trials
    index = {key: i for i, key in enumerate(zip(trials["neuron"], trials["protocol"], trials["number"],
                                                 trials["trial_name"]))}
    assert len(index) == len(trials) == sum(len(recs) for _, recs in files.values())
    for neuron, (_, records) in files.items():
        for rec in records:
            i = index[neuron, rec["protocol"], rec["number"], rec["trial_name"]]
            times = rec["times"].ravel()
            expected = corpus.trial_spikes(i)
            if expected.size == 0:
                assert times.tolist() == [SILENT] and rec["ids"].ravel().tolist() == [SILENT]
                assert rec["pre_time"] == rec["post_time"] == 0
            else:
                np.testing.assert_array_equal(times, expected)
                assert rec["ids"].size == times.size
            assert decode(rec["group_attrs"]["stim_md5"]) == trials["md5"].iat[i]
            for key in ("bg_rate", "peri_rate", "pre_time", "post_time"):
                assert rec[key] == trials[key].iat[i] or np.isnan(rec[key]) and np.isnan(trials[key].iat[i])
    assert trials["count"].sum() == corpus.spike_times.size
    assert (trials["start"] == np.r_[0, np.cumsum(trials["count"])[:-1]]).all()


def test_trial_order_and_counts(corpus):
    trials = corpus.trials
    assert trials.equals(trials.sort_values(["animal", "neuron", "md5", "order"], ignore_index=True))
    by_pair = trials.groupby(["neuron", "md5"])
    assert (by_pair["order"].agg(list) == by_pair.size().map(lambda n: list(range(n)))).all()
    expected = trials.sort_values(["neuron", "md5", "protocol", "presentation"], ignore_index=True)
    assert trials[["protocol", "presentation"]].equals(expected[["protocol", "presentation"]])
    renamed = trials["neuron"].isin(corpus.units.loc[corpus.units["renamed"], "neuron"])
    n = trials.groupby(["neuron", "protocol", "number"])["presentation"].transform("size")
    for row, size in zip(trials.itertuples(), n):
        held = synthetic.string_order(size) if renamed[row.Index] else np.arange(size)
        assert held[row.trial_name - 1] == row.presentation - 1
    assert (trials.loc[renamed & (n >= 10), "trial_name"] != trials.loc[renamed & (n >= 10), "presentation"]).any()
    per_group = trials.groupby(["neuron", "protocol", "number"]).size()
    assert set(per_group) == {9, 10, 11}
    assert by_pair.size().rename("n_trials").reset_index().merge(corpus.pairs)["n_trials"].notna().all()
    np.testing.assert_array_equal(by_pair.size().to_numpy(), corpus.pairs.sort_values(["neuron", "md5"])["n_trials"])
    assert 15 <= trials["count"].mean() <= 60


def test_spike_time_variants(corpus):
    trials = corpus.trials.merge(corpus.stims[["md5", "duration"]], on="md5")
    assert (trials["count"] == 0).any() and (trials["count"] == 1).any()
    silent_pairs = trials.groupby(["neuron", "md5"])["count"].max() == 0
    assert silent_pairs.any(), "some pair should have all trials silent"
    last = trials.groupby(["neuron", "protocol", "number"])["presentation"].transform("max")
    n_out = {"pre": 0, "post": 0, "outlier": 0}
    for i, row in enumerate(corpus.trials.itertuples()):
        times = corpus.trial_spikes(i)
        assert times.dtype == np.float64 and np.all(np.diff(times) >= 0)
        duration = trials["duration"].iat[i]
        n_out["pre"] += np.sum((times < 0) & (times >= -row.pre_time))
        n_out["post"] += np.sum((times > duration) & (times <= duration + row.post_time))
        far = (times < -row.pre_time) | (times > duration + row.post_time)
        if far.any():
            assert row.presentation in (1, last.iat[i]), "outliers only in a group's first or last trial"
            n_out["outlier"] += 1
    assert min(n_out.values()) > 0, n_out


def test_dataset_encodings(files):
    shapes = {True: set(), False: set()}
    for _, records in files.values():
        for rec in records:
            times, ids = rec["times"], rec["ids"]
            assert times.shape == ids.shape
            silent = times.size == 1 and times.ravel()[0] == SILENT
            assert not silent or ids.ravel()[0] == SILENT
            if rec["matlab"]:  # MATLAB's size(): columns, or rows in files rewritten later
                assert times.dtype == ids.dtype == np.float64
                shapes[True].add("(1, 1)" if silent else "(n, 1)" if times.shape[1] == 1 else "(1, n)")
            elif silent:  # h5py: a scalar int64 -999 in both
                assert times.shape == () and times.dtype == ids.dtype == np.int64
                shapes[False].add("scalar")
            else:
                assert times.ndim == 1 and times.dtype == np.float64 and ids.dtype == np.int64
                shapes[False].add("(n,)")
    assert shapes == {True: {"(1, 1)", "(n, 1)", "(1, n)"}, False: {"scalar", "(n,)"}}


def test_spike_ids_follow_recording_order(corpus, files):
    """Within a protocol, ids grow with presentation across interleaved stimuli."""
    interleaved = 0
    for neuron, (_, records) in files.items():
        frame = pd.DataFrame([{"protocol": r["protocol"], "number": r["number"], "trial_name": r["trial_name"],
                               "first": r["ids"].ravel()[0]} for r in records if r["ids"].ravel()[0] != SILENT])
        truth = corpus.trials[corpus.trials["neuron"] == neuron]
        frame = frame.merge(truth, on=["protocol", "number", "trial_name"])
        for _, block in frame.sort_values("first").groupby("protocol"):
            for _, group in block.groupby("number"):
                assert (np.diff(group["presentation"].to_numpy()) > 0).all()  # id order = presentation order
            interleaved += (block["number"].diff() != 0).sum() > block["number"].nunique()
    assert interleaved > 0


def test_block_ends_and_silent_trials(corpus):
    trials = corpus.trials
    silent = trials["count"] == 0
    assert silent.any() and (trials.loc[silent, ["pre_time", "post_time"]] == 0).all().all()
    matlab = trials["neuron"].isin(corpus.units.loc[corpus.units["matlab_style"], "neuron"])
    assert trials.loc[silent & matlab, "bg_rate"].isna().all() and (trials.loc[silent & ~matlab, "bg_rate"] == 0).all()
    ended = (trials["post_time"] == 0) & ~silent
    assert ended.any() and trials.loc[ended].groupby(["neuron", "protocol"]).size().max() == 1


def test_wav_files(corpus, files):
    stims = corpus.stims.set_index("md5")
    for row in corpus.stim_files.itertuples():
        path = Path(row.wav_path)
        assert path.is_file() == row.wav_written
        if row.wav_written:
            assert hashlib.md5(path.read_bytes()).hexdigest() == row.md5
            info = sf.info(path)
            assert (info.samplerate, info.channels, info.subtype) == (WAV_RATE, 1, "PCM_16")
            assert info.frames / WAV_RATE == stims.loc[row.md5, "duration"] <= 3.0
    durations = {decode(r["group_attrs"]["stim_md5"]): r["group_attrs"]["stim_duration"]
                 for _, recs in files.values() for r in recs}
    assert durations == stims["duration"].to_dict()
    assert stims["wav_missing_everywhere"].sum() == 1
    written = corpus.stim_files.groupby("md5")["wav_written"].agg(["any", "all"])
    assert (written["any"] & ~written["all"]).sum() == 1, "one wav missing in one animal only"
    assert set(corpus.stims["stim_type"]) == {"song", "call", "mlnoise"}
    calls = corpus.stims.query("stim_type == 'call'")
    assert set(calls["call_type"]) == set(synthetic.CALL_TYPES)
    assert (corpus.stims.query("stim_type != 'call'")["call_type"] == "").all()


def test_wav_content_matches_description(corpus):
    row = corpus.stims.query("stim_type == 'song' and not wav_missing_everywhere").iloc[0]
    path = corpus.stim_files.query("md5 == @row.md5 and wav_written")["wav_path"].iat[0]
    x, rate = sf.read(path)
    kind_, onset, offset, f0, f1 = next(s for s in row.segments if s[0] == "tone" and s[2] - s[1] > 0.05)
    seg = x[int(onset * rate) + 200:int(offset * rate) - 200]
    peak = np.fft.rfftfreq(seg.size, 1 / rate)[np.abs(np.fft.rfft(seg)).argmax()]
    assert abs(peak - f0) < 2 * rate / seg.size
    assert np.abs(x[:int(row.segments[0][1] * rate) - 10]).max() == 0  # silence before the first sound


def test_numbering_is_per_animal(corpus):
    files = corpus.stim_files
    numbers = files.groupby("md5")["number"].nunique()
    assert (numbers > 1).any(), "the same md5 should have different numbers in different animals"
    sounds = files.groupby("number")["md5"].nunique()
    assert (sounds > 1).any(), "the same number should mean different sounds in different animals"
    groups = corpus.groups.merge(files, on=["animal", "number"], suffixes=("", "_file"))
    assert len(groups) == len(corpus.groups) and (groups["md5"] == groups["md5_file"]).all()


def test_groups_and_pairs_tables(corpus, files):
    groups = corpus.groups.set_index(["neuron", "protocol", "number"])
    for neuron, (_, records) in files.items():
        for rec in records:
            row = groups.loc[(neuron, rec["protocol"], rec["number"])]
            for key, value in rec["group_attrs"].items():
                assert decode(value) == row[key] or np.isnan(row[key]) and np.isnan(decode(value)), key
    first = corpus.groups.sort_values("protocol").groupby(["neuron", "md5"]).first()
    pairs = corpus.pairs.set_index(["neuron", "md5"])
    pd.testing.assert_frame_equal(pairs[["zscore", "tstat", "pvalue"]],
                                  first.loc[pairs.index, ["zscore", "tstat", "pvalue"]])
    assert (corpus.groups.groupby("protocol")["pvalue"].min() < 0.05).any()


def test_write_is_deterministic(corpus, tmp_path):
    again = write_corpus(tmp_path / "again", processes=1)
    for name in ("units", "stims", "stim_files", "groups", "pairs", "trials"):
        pd.testing.assert_frame_equal(getattr(again, name), getattr(corpus, name).assign(
            **({"wav_path": again.stim_files["wav_path"]} if name == "stim_files" else {})))
    np.testing.assert_array_equal(again.spike_times, corpus.spike_times)
    digest = lambda root: {p.relative_to(root): hashlib.md5(p.read_bytes()).hexdigest()  # noqa: E731
                           for p in root.rglob("*") if p.is_file()}
    assert digest(again.root) == digest(corpus.root)


def test_overrides_and_errors(tmp_path):
    small = write_corpus(tmp_path / "small", animals=["GreBlu9508M"], units_per_animal=2,
                         stims_per_animal=4, pool=4, trials=(10, 10), processes=1, seed=3)
    assert len(small.units) == 2 and (small.groups["n_trials"] == 10).all()
    assert small.stims["md5"].nunique() == 4
    with pytest.raises(FileExistsError):
        write_corpus(tmp_path / "small", processes=1)
    with pytest.raises(TypeError, match="unknown override"):
        write_corpus(tmp_path / "x", units=3)
    with pytest.raises(ValueError, match="unknown animal"):
        write_corpus(tmp_path / "y", animals=["Nobody"])


def test_sample_corpus_is_cached_and_atomic(tmp_path, monkeypatch):
    monkeypatch.setenv("AA4XR_CACHE_DIR", str(tmp_path))
    root = sample_corpus()
    assert root == tmp_path / f"sample-v{synthetic.SAMPLE_VERSION}"
    assert len(list(root.glob("*/Site*.h5"))) == 21 and sorted(p.name for p in tmp_path.iterdir()) == [root.name]

    def fail(*args, **kwargs):
        raise AssertionError("sample_corpus must not rewrite an existing sample")

    monkeypatch.setattr(synthetic, "write_corpus", fail)
    assert sample_corpus() == root

    target = tmp_path / "raced"

    def concurrent_winner(tmp, *args, **kwargs):
        (target / "winner").mkdir(parents=True)  # another process renamed its copy first

    monkeypatch.setattr(synthetic, "write_corpus", concurrent_winner)
    assert sample_corpus(target) == target
    assert [p.name for p in target.iterdir()] == ["winner"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([root.name, "raced"])
