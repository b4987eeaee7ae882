"""The ``aa4`` engine: xarray's idioms against an independent histogram of the writer's ground truth."""

from __future__ import annotations

import pickle
import warnings

import dask
import numpy as np
import pytest
import xarray as xr

import aa4xr
from aa4xr import backend
from test_dataset import expected_spike_count

DT, PRE, POST = 0.01, 0.1, 0.05


@pytest.fixture(scope="module")
def opened(corpus):
    ds = aa4xr.open_aa4(corpus.root, sort_types=None, dt=DT, pre=PRE, post=POST)
    return ds, expected_spike_count(corpus, ds, DT, PRE, POST)


@pytest.fixture
def binned_rows(monkeypatch):
    """Rows each call of the binning kernel receives (the store rows a selection reads)."""
    calls = []
    original = backend.count_block

    def counting(spike_time, starts, sizes, *args, **kwargs):
        calls.append(len(sizes))
        return original(spike_time, starts, sizes, *args, **kwargs)

    monkeypatch.setattr(backend, "count_block", counting)
    return calls


def test_engine_gives_the_same_dataset(corpus, opened):
    ds, _ = opened
    assert backend.AA4BackendEntrypoint().guess_can_open(corpus.root)
    assert not backend.AA4BackendEntrypoint().guess_can_open(corpus.root / "README.txt")
    plain = xr.open_dataset(corpus.root, engine="aa4", sort_types=None, dt=DT, pre=PRE, post=POST)
    assert not isinstance(plain.spike_count.variable._data, np.ndarray)  # lazily indexed, not loaded
    xr.testing.assert_identical(plain, ds)
    assert isinstance(ds.spike_count.data, dask.array.Array)
    assert ds.spike_count.dtype == np.float32


@pytest.mark.parametrize("select", [
    lambda ds, gt: {"stim_type": ["song", "call"]},
    lambda ds, gt: {"animal": sorted(gt.units["animal"].unique())[:2], "sort_type": "single"},
    lambda ds, gt: {"electrode": slice(17, 32)},
    lambda ds, gt: {"neuron": ds.electrode > 16},
    lambda ds, gt: {"stim_type": "call", "neuron": ds.neuron.values[[4, 1]], "trial": [3, 0, 3],
                    "time": slice(0.0, 0.2)},
])
def test_selections_equal_ground_truth(opened, corpus, select):
    ds, expected = opened
    labels = select(ds, corpus)
    got = ds.sel(labels)
    truth = xr.DataArray(expected, coords=ds.spike_count.coords, dims=ds.spike_count.dims).sel(labels)
    assert got.sizes["stim"] and got.sizes["neuron"]
    for name, value in labels.items():
        if name in ("stim_type", "animal", "sort_type"):
            assert set(got[name].values) == set(np.atleast_1d(value))
        if name == "electrode":
            assert got.electrode.min() >= 17 and got.electrode.max() <= 32
    np.testing.assert_array_equal(got.spike_count.values, truth.values)
    lazy = xr.open_dataset(corpus.root, engine="aa4", sort_types=None, dt=DT, pre=PRE, post=POST).sel(labels)
    np.testing.assert_array_equal(lazy.spike_count.values, truth.values)


def test_unknown_label_named(opened):
    ds, _ = opened
    with pytest.raises(KeyError, match="whistle"):
        ds.sel(stim_type=["song", "whistle"])


def test_selection_bins_only_its_rows(opened, corpus, binned_rows):
    ds, expected = opened
    neuron = corpus.trials["neuron"].value_counts().index[0]
    rows = int((corpus.trials["neuron"] == neuron).sum())
    one = ds.spike_count.sel(neuron=neuron)
    psth = one.mean("trial").compute(scheduler="sync")
    assert sum(binned_rows) == rows
    i = list(ds.neuron.values).index(neuron)
    with warnings.catch_warnings():  # an unheard pair's mean is NaN, as expected
        warnings.simplefilter("ignore", RuntimeWarning)
        np.testing.assert_allclose(psth.values, np.nanmean(expected[:, i], axis=1), rtol=1e-6)
    binned_rows.clear()
    stim, trial = ds.stim.values[0], 1
    ds.spike_count.sel(stim=stim, trial=trial).values
    assert sum(binned_rows) == int(((corpus.trials["md5"] == stim) & (corpus.trials["order"] == trial)).sum())


def test_plot_on_label_selections(opened):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    ds, _ = opened
    assert ds.stim_type.dtype.kind == "U" and ds.neuron.dtype.kind == "U" and ds.animal.dtype.kind == "U"
    ds.isel(neuron=0).spike_count.mean("trial").isel(stim=0).plot()
    ds.isel(neuron=0).spike_count.mean("trial").plot()
    ds.sel(stim_type="song").spike_count.mean(["trial", "time"]).plot()
    matplotlib.pyplot.close("all")


def test_stimulus_never_multiplies(opened):
    ds, _ = opened
    masked = ds.where(ds.electrode > 16, drop=True)
    assert masked.spectrogram.dims == ("stim", "frequency", "time")
    assert masked.sizes["neuron"] == int((ds.electrode > 16).sum())
    assert masked.spectrogram.nbytes == ds.spectrogram.nbytes
    assert "neuron" not in ds.where(ds.electrode > 16).spectrogram.dims
    assert "neuron" not in ds.sel(neuron=ds.electrode > 16).spectrogram.dims
    frame = ds.isel(stim=[0], neuron=[0]).spike_count.to_dataframe()
    assert len(frame) == ds.sizes["trial"] * ds.sizes["time"]  # never once per frequency band


def test_graph_is_small_and_ships_no_trials(opened):
    ds, _ = opened
    graph = dict(ds.spike_count.sum("trial").__dask_graph__())
    size = len(pickle.dumps(graph))
    n_chunks = ds.spike_count.data.npartitions
    assert size < 2_000 * n_chunks + 20_000
    clone = pickle.loads(pickle.dumps(ds.spike_count.data))
    np.testing.assert_array_equal(clone.compute(scheduler="sync"), ds.spike_count.values)


@pytest.mark.parametrize("engine", ["aa4", "default"])
def test_netcdf_round_trip(opened, tmp_path, engine):
    ds, _ = opened
    part = ds.isel(stim=[0, 1, -2, -1], neuron=slice(0, 6))
    path = tmp_path / "part.nc"
    part.to_netcdf(path)
    if engine == "aa4":
        assert backend.AA4BackendEntrypoint().guess_can_open(path)
        back = xr.open_dataset(path, engine="aa4")
    else:
        back = aa4xr.index_coords(xr.open_dataset(path))
    xr.testing.assert_identical(back, part)
    assert back.stim_type.dtype.kind == "U"
    np.testing.assert_array_equal(back.sel(stim_type=["song", "call"]).spike_count.values,
                                  part.sel(stim_type=["song", "call"]).spike_count.values)


def test_direct_reader_only_for_plain_selections(opened):
    ds, expected = opened
    sub = ds.sel(stim_type="song").isel(neuron=[4, 1], time=slice(3, 30)).spike_count
    array, (stim, neuron, trial, time) = backend.direct_reader(sub)
    assert neuron.tolist() == [4, 1] and time.tolist() == list(range(3, 30))
    np.testing.assert_array_equal(array._getitem((stim, neuron, trial, time)), expected[np.ix_(stim, neuron, trial, time)])
    assert backend.direct_reader(ds.where(ds.electrode > 16).spike_count) is None
    assert backend.direct_reader((ds.spike_count * 2).rename("spike_count")) is None
    assert backend.direct_reader(ds.spike_count.compute()) is None


def _truth_mean(expected: np.ndarray) -> np.ndarray:
    """The NaN-skipping trial mean of ground-truth counts ``(stim, neuron, trial, time)``, float32."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.nansum(expected, axis=2) / np.isfinite(expected).sum(axis=2)).astype(np.float32)


@pytest.mark.parametrize("select", [
    {},
    {"neuron": [2]},
    {"stim": [1], "trial": slice(0, 5)},
    {"trial": [0, 2, 5], "time": [0, 3, 4, 10]},
    {"neuron": slice(3, None, 2), "time": slice(5, 25)},
])
@pytest.mark.parametrize("chunks", [{}, None])
def test_trial_mean_from_rows_equals_ground_truth(opened, corpus, binned_rows, select, chunks):
    """The rows' trial mean equals the ground truth's, never makes the (stim, neuron, trial, time) block,
    and stays lazy with dask: one task for one neuron, psth identical to averaging the loaded selection."""
    ds, expected = opened
    src = ds if chunks == {} else xr.open_dataset(corpus.root, engine="aa4", sort_types=None, dt=DT, pre=PRE,
                                                  post=POST)
    part = src.isel(select)
    with dask.config.set(scheduler=lambda *a, **k: pytest.fail("dask computed while building the mean")):
        mean = backend.trial_mean(part.spike_count)
    assert mean.dims == ("stim", "neuron", "time") and (mean.chunks is None) == (chunks is None)
    if select == {"neuron": [2]} and chunks == {}:
        assert mean.data.npartitions == 1
    truth = xr.DataArray(expected, coords=ds.spike_count.coords, dims=ds.spike_count.dims).isel(select)
    np.testing.assert_array_equal(mean.values, _truth_mean(truth.values))
    assert binned_rows == []
    xr.testing.assert_identical(mean.coords.to_dataset(), part.spike_count.isel(trial=0, drop=True).coords.to_dataset())
    xr.testing.assert_identical(aa4xr.psth(part).compute(), aa4xr.psth(part.compute()))


def test_trial_mean_declines_what_it_cannot_read_in_order(opened):
    ds, _ = opened
    assert backend.trial_mean(ds.spike_count.isel(neuron=[3, 0])) is None
    assert backend.trial_mean(ds.spike_count.isel(trial=[1, 1])) is None
    assert backend.trial_mean(ds.spike_count * 2) is None


def test_whole_load_fills_one_array(opened):
    """Computing the whole spike_count is one binning task whose array the chunks are views of
    (peak ~1x dense, not every chunk plus their concatenation); other graphs are plain dask."""
    from dask.callbacks import Callback

    ds, expected = opened
    assert type(ds.spike_count.data) is dask.array.Array  # xarray mixes no other chunked type with dask's
    ran = []
    with Callback(posttask=lambda key, result, dsk, state, worker_id: ran.append(str(key))):
        loaded = ds.spike_count.compute()
    assert sum(k.startswith("in-place-") for k in ran) == 1
    assert loaded.data.flags.owndata
    np.testing.assert_array_equal(loaded.values, expected)
    unoptimised, = dask.compute(ds.spike_count.data, optimize_graph=False)  # chunks concatenated, as dask does
    np.testing.assert_array_equal(unoptimised, expected)
    part = ds.spike_count.isel(neuron=[0, 3])
    ran.clear()
    with Callback(posttask=lambda key, result, dsk, state, worker_id: ran.append(str(key))):
        np.testing.assert_array_equal(part.values, expected[:, [0, 3]])
    assert not any(k.startswith("in-place-") for k in ran)
    xr.testing.assert_identical(ds.isel({}).compute(), ds.compute())  # with the other dask variables


def test_rows_out_of_store_order_are_placed_by_pair(opened, corpus):
    """A layout built from rows in any order bins what the stores' own order bins."""
    from pathlib import Path

    from aa4xr.dataset import _collect
    from aa4xr.store import store_paths

    ds, expected = opened
    paths = store_paths(corpus.root)
    stims, units, rows, _ = _collect(Path(corpus.root), paths, None, None)
    args = (list(paths.items()), stims, units, DT, PRE, POST)
    layout, _ = backend._layout_of(rows, *args)
    shuffled = np.random.default_rng(0).permutation(rows.path.size)
    mixed = backend.replace(rows, **{k: getattr(rows, k)[shuffled] for k in ("path", "stim", "neuron", "trial",
                                                                          "start", "size")},
                            values={k: v[shuffled] for k, v in rows.values.items()})
    assert backend.pair_runs(mixed, layout.shape) is None
    placed, reordered = backend._layout_of(mixed, *args)
    assert backend.pair_runs(reordered, placed.shape) is not None
    cells = [np.arange(n) for n in (*layout.shape, layout.time.size)]
    np.testing.assert_array_equal(placed.bin(*cells), layout.bin(*cells))
    np.testing.assert_array_equal(placed.bin(*cells), expected)
