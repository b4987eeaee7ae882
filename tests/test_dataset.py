"""open_aa4 against the synthetic writer's ground truth."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import aa4xr


def expected_spike_count(gt, ds, dt, pre, post):
    """An independent dense histogram of the ground truth, NaN where DESIGN.md says."""
    S, N, R, T = ds.spike_count.shape
    out = np.full((S, N, R, T), np.nan)
    stim = {m: i for i, m in enumerate(ds.stim.values)}
    neuron = {m: i for i, m in enumerate(ds.neuron.values)}
    duration = gt.stims.set_index("md5")["duration"]
    edges = -pre + np.arange(T + 1) * dt
    for i, row in enumerate(gt.trials.itertuples()):
        if row.neuron not in neuron or row.md5 not in stim:
            continue
        dur = duration[row.md5]
        k = np.searchsorted(edges, gt.trial_spikes(i), side="right") - 1
        counts = np.bincount(k[(k >= 0) & (k < T)], minlength=T).astype(float)
        t = edges[:-1]
        valid = (t < dur + post) & (t + dt > -row.pre_time) & (t <= dur + row.post_time)
        counts[~valid] = np.nan
        out[stim[row.md5], neuron[row.neuron], row.order] = counts
    return out


@pytest.mark.parametrize("dt", [0.001, 0.005])
@pytest.mark.parametrize("pre,post", [(0.0, 0.0), (0.25, 0.4)])
def test_counts_equal_ground_truth(corpus, dt, pre, post):
    ds = aa4xr.open_aa4(corpus.root, sort_types=None, dt=dt, pre=pre, post=post)
    longest = corpus.stims["duration"].max()
    n_time = int((-pre + np.arange(int((longest + pre + post) / dt) + 5) * dt < longest + post).sum())
    np.testing.assert_array_equal(ds.time.values, -pre + np.arange(n_time) * dt)
    np.testing.assert_array_equal(ds.spike_count.values, expected_spike_count(corpus, ds, dt, pre, post))


def test_every_trial_unit_and_stimulus_kept(corpus):
    ds = aa4xr.open_aa4(corpus.root, sort_types=None)
    assert sorted(ds.neuron.values) == sorted(corpus.units["neuron"])
    assert sorted(ds.stim.values) == sorted(corpus.stims["md5"])
    expected = corpus.trials.groupby(["md5", "neuron"]).size()
    got = ds.n_trials.to_series()
    np.testing.assert_array_equal(got[got > 0].sort_index().values, expected.sort_index().values)
    assert int(ds.n_trials.sum()) == len(corpus.trials)
    # every spike is in the store, far outliers included
    assert int(aa4xr.open_spike_times(corpus.root).row_size.sum()) == corpus.spike_times.size
    # with a wide window every spike inside its trial's recorded span is counted
    wide = aa4xr.open_aa4(corpus.root, sort_types=None, dt=0.01, pre=5.0, post=5.0)
    expected = np.nansum(expected_spike_count(corpus, wide, 0.01, 5.0, 5.0))
    assert float(wide.spike_count.sum()) == expected > 0.99 * corpus.spike_times.size


def test_silent_trials_are_zeros_and_all_silent_pairs_kept(corpus):
    ds = aa4xr.open_aa4(corpus.root, sort_types=None, dt=0.01)
    silent = corpus.trials[corpus.trials["count"] == 0]
    assert len(silent)
    for row in silent.itertuples():
        values = ds.spike_count.sel(stim=row.md5, neuron=row.neuron, trial=row.order).values
        inside = values[~np.isnan(values)]
        assert inside.size and (inside == 0).all()
    per_pair = corpus.trials.groupby(["md5", "neuron"])["count"].sum()
    all_silent = per_pair[per_pair == 0]
    assert len(all_silent)
    for md5, neuron in all_silent.index:
        assert int(ds.n_trials.sel(stim=md5, neuron=neuron)) > 0


def test_trials_in_numeric_presentation_order_and_reruns_merged(corpus):
    ds = aa4xr.open_aa4(corpus.root, sort_types=None)
    st = aa4xr.open_spike_times(corpus.root)
    rows = st[["trial", "protocol", "trial_name"]].to_dataframe().assign(
        stim=st.stim.values, neuron=st.neuron.values)
    merged = rows.merge(corpus.trials, left_on=["stim", "neuron", "protocol", "trial_name"],
                        right_on=["md5", "neuron", "protocol", "trial_name"], validate="one_to_one")
    assert len(merged) == len(corpus.trials)
    np.testing.assert_array_equal(merged["trial"], merged["order"])
    assert (corpus.trials["trial_name"] >= 10).any()
    reruns = corpus.trials.groupby(["md5", "neuron"])["protocol"].nunique()
    reruns = reruns[reruns > 1]
    assert len(reruns)
    for md5, neuron in reruns.index:
        n = ((corpus.trials["md5"] == md5) & (corpus.trials["neuron"] == neuron)).sum()
        assert int(ds.n_trials.sel(stim=md5, neuron=neuron)) == n


def test_exact_spike_times(corpus):
    st = aa4xr.open_spike_times(corpus.root)
    for i in range(0, len(corpus.trials), 97):
        row = corpus.trials.iloc[i]
        trains = aa4xr.trial_spike_times(st, row["md5"], row["neuron"])
        np.testing.assert_array_equal(trains[row["order"]], corpus.trial_spikes(i))


def test_metadata_coordinates(corpus):
    ds = aa4xr.open_aa4(corpus.root, sort_types=None)
    units = corpus.units.set_index("neuron").loc[ds.neuron.values]
    for name in ("animal", "sex", "site", "sort_type", "electrode", "sort_id"):
        np.testing.assert_array_equal(ds[name].values, units[name].values, err_msg=name)
    for name in ("ldepth", "rdepth", "subsort_id"):
        np.testing.assert_array_equal(ds[name].values, units[name].values.astype(float), err_msg=name)
    np.testing.assert_array_equal(ds.cell_id.values, units["stem"].values)
    stims = corpus.stims.set_index("md5").loc[ds.stim.values]
    for name in ("stim_type", "call_type", "stim_class"):
        np.testing.assert_array_equal(ds[name].values, stims[name].values, err_msg=name)
    np.testing.assert_allclose(ds.duration.values, stims["duration"].values)
    trials = corpus.trials
    for row in trials.iloc[::53].itertuples():
        got = ds[["bg_rate", "peri_rate", "pre_time", "post_time"]].sel(stim=row.md5, neuron=row.neuron, trial=row.order)
        for name in ("bg_rate", "peri_rate", "pre_time", "post_time"):
            value, truth = float(got[name]), getattr(row, name)
            assert value == pytest.approx(truth, rel=1e-6) or np.isnan(value) and np.isnan(truth), name
    pairs = corpus.pairs
    for row in pairs.iloc[::7].itertuples():
        got = float(ds.zscore.sel(stim=row.md5, neuron=row.neuron))
        assert got == pytest.approx(row.zscore, rel=1e-6) or np.isnan(got) and np.isnan(row.zscore)


def test_selections_feel_native(corpus):
    ds = aa4xr.open_aa4(corpus.root, sort_types=None)
    songs = ds.sel(stim_type="song")
    assert set(songs.stim_type.values) == {"song"}
    assert songs.sizes["stim"] == (corpus.stims["stim_type"] == "song").sum()
    animal = corpus.units["animal"].iloc[0]
    one = ds.sel(animal=animal)
    assert set(one.animal.values) == {animal}
    assert one.sizes["neuron"] == (corpus.units["animal"] == animal).sum()
    deep = ds.where(ds.electrode > 16, drop=True)
    assert (deep.electrode > 16).all()
    rates = ds.spike_count.mean("trial").groupby("animal").mean()
    assert set(rates.animal.values) == set(corpus.units["animal"])


def test_sort_and_stim_type_filters(corpus):
    default = aa4xr.open_aa4(corpus.root)
    assert set(default.sort_type.values) <= {"single", "multi"}
    expected = corpus.units[corpus.units["sort_type"].isin(["single", "multi"])]
    assert sorted(default.neuron.values) == sorted(expected["neuron"])
    calls = aa4xr.open_aa4(corpus.root, stim_types="call", sort_types=None)
    assert sorted(calls.stim.values) == sorted(corpus.stims.query("stim_type == 'call'")["md5"])


def test_lazy(corpus, no_compute):
    with no_compute:
        ds = aa4xr.open_aa4(corpus.root, dt=0.001)
        mean = ds.spike_count.mean("trial")
    assert mean.chunks is not None


def test_netcdf_round_trip(corpus, tmp_path):
    ds = aa4xr.open_aa4(corpus.root, sort_types=None, dt=0.01, pre=0.1, post=0.1)
    path = tmp_path / "aa4.nc"
    ds.to_netcdf(path)
    with xr.open_dataset(path) as back:
        xr.testing.assert_identical(aa4xr.index_coords(back.load()), ds.load())


def test_store_reused_and_rebuilt_when_files_change(corpus, fresh_cache, monkeypatch, tmp_path):
    import shutil

    from aa4xr import store

    root = tmp_path / "copy"
    shutil.copytree(corpus.root, root)
    first = aa4xr.open_aa4(root, dt=0.01)
    calls = []
    monkeypatch.setattr(store, "_read_or_error", lambda p: calls.append(p) or (_ for _ in ()).throw(AssertionError))
    again = aa4xr.open_aa4(root, dt=0.002, pre=0.1)  # another grid: store only
    assert calls == [] and again.sizes["neuron"] == first.sizes["neuron"]
    monkeypatch.undo()
    monkeypatch.setenv("AA4XR_CACHE_DIR", str(fresh_cache))
    unit = next(root.glob(f"{corpus.units['animal'].iloc[0]}/Site*.h5"))
    unit.touch()
    reread = []
    original = store._read_or_error
    monkeypatch.setattr(store, "_read_or_error", lambda p: reread.append(p) or original(p))
    aa4xr.open_aa4(root, dt=0.01, processes=1)
    assert len(reread) == len(list(unit.parent.glob("Site*.h5")))  # unit files only, never Old_Units*


def test_bad_input_errors(corpus, tmp_path):
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        aa4xr.open_aa4(tmp_path / "does-not-exist")
    (tmp_path / "empty" / "notes").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no animal folders"):
        aa4xr.open_aa4(tmp_path / "empty")
    with pytest.raises(ValueError, match="NoSuchBird"):
        aa4xr.open_aa4(corpus.root, animals="NoSuchBird")
    with pytest.raises(ValueError, match="whistle"):
        aa4xr.open_aa4(corpus.root, stim_types=["song", "whistle"])
    with pytest.raises(ValueError, match="errors="):
        aa4xr.open_aa4(corpus.root, errors="ignore")
    with pytest.raises(ValueError, match="dt="):
        aa4xr.open_aa4(corpus.root, dt=0)


def _broken_copy(corpus, tmp_path, how):
    import shutil

    import h5py

    root = tmp_path / how
    shutil.copytree(corpus.root, root)
    unit = sorted(root.glob(f"{corpus.units['animal'].iloc[0]}/Site*.h5"))[0]
    if how == "truncated":
        data = unit.read_bytes()
        unit.write_bytes(data[: len(data) // 2])
    else:
        with h5py.File(unit, "r+") as f:
            del f.attrs["sortType"]
    return root, unit


@pytest.mark.parametrize("how,message", [("truncated", "not a readable HDF5"), ("missing_attr", "sortType")])
def test_unreadable_file_raises_or_is_skipped(corpus, tmp_path, how, message):
    root, unit = _broken_copy(corpus, tmp_path, how)
    with pytest.raises(ValueError, match=message) as info:
        aa4xr.open_aa4(root, processes=1)
    assert unit.name in str(info.value)
    with pytest.warns(UserWarning, match=unit.name):
        ds = aa4xr.open_aa4(root, errors="warn", sort_types=None, processes=1)
    assert f"{unit.parent.name}/{unit.stem}" not in ds.neuron.values
    assert ds.sizes["neuron"] == len(corpus.units) - 1
    # the store remembers the skipped file: a strict open still refuses it
    with pytest.raises(ValueError, match=unit.name):
        aa4xr.open_aa4(root)


def test_trials_in_presentation_order_with_protocol_and_name(corpus):
    """`trial` is presentation order (from spike_ids, whatever the file's naming);
    `protocol` and `trial_name` tell where each trial sits in its file."""
    ds = aa4xr.open_aa4(corpus.root, sort_types=None, dt=0.01, spectrogram=False)
    trials = corpus.trials
    renamed = set(corpus.units.loc[corpus.units["renamed"], "neuron"])
    assert renamed and (trials["trial_name"] != trials["presentation"]).any()
    sub = ds[["protocol", "trial_name"]].load()
    for row in trials.iloc[::7].itertuples():
        cell = sub.sel(stim=row.md5, neuron=row.neuron, trial=row.order)
        assert str(cell.protocol.values) == row.protocol
        assert str(cell.trial_name.values) == str(row.trial_name)
    # every spike of a renamed unit's trials lands in the trial of its presentation
    counts = ds.spike_count.sum("time")
    for row in trials[trials["neuron"].isin(renamed) & (trials["pre_time"] > 0)].iloc[::11].itertuples():
        duration = corpus.stims.set_index("md5").loc[row.md5, "duration"]
        spikes = corpus.trial_spikes(row.Index)
        expected = np.sum((spikes >= 0) & (spikes < np.floor(duration / 0.01 - 1e-9) * 0.01 + 0.01))
        assert int(counts.sel(stim=row.md5, neuron=row.neuron, trial=row.order)) == expected
    assert (sub.protocol.values[ds.n_trials.values == 0] == "").all()
