"""aa4xr.torch: TorchDataset, collate and the normalisation helpers, on a hand-made Dataset and on the ground truth."""

from __future__ import annotations

import importlib.util
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

torch = pytest.importorskip("torch")
da = pytest.importorskip("dask.array")

from aa4xr.torch import (  # noqa: E402
    TorchDataset, collate, normalize_stimulus, response_stats, stimulus_stats)

DT, PRE, POST, RATE = 0.01, 0.02, 0.01, 1000.0
DURATIONS = np.array([0.05, 0.08, 0.03, 0.06])
STIM_TYPES = ["song", "call", "mlnoise", "song"]
ANIMALS = ["A", "A", "B"]
N_TRIALS = np.array([[3, 2, 0],   # stim 0: heard by A's neurons
                     [0, 4, 4],   # stim 1: one neuron of A, and B
                     [2, 0, 1],   # stim 2
                     [0, 0, 0]])  # stim 3: nobody heard it -> no item
N_TRIAL_MAX, N_FREQ = 5, 6        # trial 4 holds no data anywhere


def make_dataset(waveform: bool = False) -> xr.Dataset:
    """A small numpy-backed Dataset following the contract's NaN rules."""
    rng = np.random.default_rng(0)
    time = -PRE + np.arange(11) * DT                           # up to max(duration) + post
    window = time[None, :] < DURATIONS[:, None] + POST          # (stim, time)
    trial_ok = np.arange(N_TRIAL_MAX)[None, None, :] < N_TRIALS[:, :, None]
    counts = rng.poisson(1.0, (4, 3, N_TRIAL_MAX, time.size)).astype(np.float32)
    counts[1, 2, 0] = 0.0                                       # a silent trial: zeros
    counts[~trial_ok] = np.nan
    counts[~np.broadcast_to(window[:, None, None, :], counts.shape)] = np.nan
    counts[1, 1, 1, time > 0.03] = np.nan                       # a trial recorded for a shorter span
    spec = rng.random((4, N_FREQ, time.size)).astype(np.float32) + 0.5
    spec[:, 0] = 0.0                                            # a band without variance
    spec[:, :, time < 0] = 0.0                                  # silence before onset
    spec[~np.broadcast_to(window[:, None, :], spec.shape)] = np.nan
    ds = xr.Dataset(
        {"spike_count": (("stim", "neuron", "trial", "time"), counts, {"units": "1"}),
         "n_trials": (("stim", "neuron"), N_TRIALS.astype(np.int64)),
         "spectrogram": (("stim", "frequency", "time"), spec,
                         {"units": "dB", "long_name": "mel spectrogram"})},
        coords={"stim": [f"md5{i}" for i in range(4)], "stim_type": ("stim", STIM_TYPES),
                "call_type": ("stim", ["", "Te", "", ""]), "stim_class": ("stim", STIM_TYPES),
                "duration": ("stim", DURATIONS), "neuron": ["A/u1", "A/u2", "B/u1"],
                "animal": ("neuron", ANIMALS), "electrode": ("neuron", [3, 20, 20]),
                "trial": np.arange(N_TRIAL_MAX), "time": time,
                "frequency": np.geomspace(500.0, 8000.0, N_FREQ)},
        attrs={"dt": DT, "pre": PRE, "post": POST})
    if waveform:
        sample_time = np.arange(int(DURATIONS.max() * RATE)) / RATE
        wave = rng.standard_normal((4, sample_time.size)).astype(np.float32)
        wave[sample_time[None, :] >= DURATIONS[:, None]] = np.nan
        ds["waveform"] = (("stim", "sample"), wave)
        ds.coords["sample_time"] = ("sample", sample_time)
    return ds


def lazy(ds: xr.Dataset) -> xr.Dataset:
    """``spike_count`` as dask, in blocks of two stimuli as open_aa4 chunks it."""
    return ds.assign(spike_count=ds["spike_count"].chunk({"stim": 2}))


@pytest.fixture(params=["numpy", "dask"])
def ds(request) -> xr.Dataset:
    ds = make_dataset(waveform=True)
    return lazy(ds) if request.param == "dask" else ds


def assert_item_matches(item: dict, ds: xr.Dataset) -> None:
    """The item equals the Dataset's values element by element, and nothing with data was cut."""
    i = list(ds["stim"].values).index(item["coords"]["stim"])
    n_trials = int(ds["n_trials"].isel(stim=i).max())
    n_bins = int((ds["time"] < ds["duration"][i] + ds.attrs["post"]).sum())
    counts = ds["spike_count"].isel(stim=i).transpose("neuron", "trial", "time").values
    np.testing.assert_array_equal(item["response"].numpy(), counts[:, :n_trials, :n_bins])
    assert np.isnan(counts[:, n_trials:]).all() and np.isnan(counts[:, :, n_bins:]).all()
    assert torch.equal(item["mask"], ~torch.isnan(item["response"]))
    spec = ds["spectrogram"].isel(stim=i, time=slice(0, n_bins)).values
    np.testing.assert_array_equal(item["stimulus"].numpy()[0], np.nan_to_num(spec, nan=0.0))
    assert not torch.isnan(item["stimulus"]).any()
    expected = {name: c.values.tolist()[i] for name, c in ds.coords.items() if c.dims == ("stim",)}
    assert item["coords"] == expected


def test_import_aa4xr_never_imports_torch_and_missing_torch_is_explained():
    code = "\n".join([
        "import sys",
        "import aa4xr",
        "assert 'torch' not in sys.modules, 'import aa4xr imported torch'",
        "sys.modules['torch'] = None",
        "try:",
        "    import aa4xr.torch",
        "except ImportError as err:",
        "    print(err)",
        "else:",
        "    raise SystemExit('no ImportError')",
    ])
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert 'pip install "aa4xr[torch]"' in result.stdout
    assert "pip install torch==2.13.0" in result.stdout


def test_one_item_per_stimulus_with_data(ds):
    tds = TorchDataset(ds)
    assert len(tds) == 3
    assert list(tds.stims) == ["md50", "md51", "md52"]
    assert list(tds.neurons) == ["A/u1", "A/u2", "B/u1"]
    with pytest.raises(IndexError):
        tds[3]


def test_items_equal_the_dataset(ds):
    tds = TorchDataset(ds)
    for k in range(len(tds)):
        item = tds[k]
        assert item["response"].dtype == item["stimulus"].dtype == torch.float32
        assert item["mask"].dtype == torch.bool
        assert_item_matches(item, ds)


def test_shapes_and_nan_placement(ds):
    item = TorchDataset(ds)[1]                                  # stim 1: 0, 4, 4 trials; 0.08 s
    n_bins = int(np.sum(ds["time"].values < 0.08 + POST))
    assert item["stimulus"].shape == (1, N_FREQ, n_bins)
    assert item["response"].shape == (3, 4, n_bins)
    mask = item["mask"]
    assert not mask[0].any()                                   # never heard it
    assert mask[1, 0].all() and mask[2].all()                  # full trials
    assert not torch.isnan(item["response"][2, 0]).any()       # the silent trial is zeros, not NaN
    assert (item["response"][2, 0] == 0).all()
    recorded = torch.as_tensor(ds["time"].values[:n_bins] <= 0.03)
    assert torch.equal(mask[1, 1], recorded)                   # the shorter span
    assert item["stimulus"][0, :, ds["time"].values[:n_bins] < 0].eq(0).all()


def test_selection_with_sel_is_respected(ds):
    songs = TorchDataset(ds.set_xindex("stim_type").sel(stim_type="song"))
    assert list(songs.stims) == ["md50"]                       # md53 has no data
    animal_a = TorchDataset(ds.set_xindex("animal").sel(animal="A"))
    assert list(animal_a.stims) == ["md50", "md51", "md52"] and list(animal_a.neurons) == ["A/u1", "A/u2"]
    assert animal_a[1]["response"].shape == (2, 4, int(np.sum(ds["time"].values < 0.08 + POST)))
    one = TorchDataset(ds.sel(neuron=["B/u1"]))
    assert list(one.stims) == ["md51", "md52"]
    assert one[1]["response"].shape == (1, 1, int(np.sum(ds["time"].values < 0.03 + POST)))
    with pytest.raises(ValueError, match="scalar selection"):
        TorchDataset(ds.sel(neuron="B/u1"))


@pytest.mark.parametrize("condition", ["neuron", "pair"])
def test_selection_with_where_is_respected(ds, condition):
    if condition == "neuron":                                  # broadcasts spectrogram along neuron
        sub = ds.where(ds["electrode"] < 16, drop=True)
    else:                                                      # and masks some of its copies
        sub = ds.where(ds["n_trials"] > 0)
    tds = TorchDataset(sub)
    expected = ["md50", "md52"] if condition == "neuron" else ["md50", "md51", "md52"]
    assert list(tds.stims) == expected
    for k in range(len(tds)):
        item = tds[k]
        original = ds.sel(neuron=list(tds.neurons))
        assert_item_matches(item, original)


def test_waveform_items(ds):
    tds = TorchDataset(ds, stimulus="waveform")
    for k, duration in enumerate(DURATIONS[:3]):
        stimulus = tds[k]["stimulus"]
        n_samples = int(np.sum(ds["sample_time"].values < duration))
        assert stimulus.shape == (1, n_samples)
        np.testing.assert_array_equal(stimulus.numpy()[0], ds["waveform"].values[k, :n_samples])


def test_stimuli_without_a_sound_are_skipped_with_a_warning(ds):
    ds["spectrogram"][2] = np.nan                              # md52's sound file is missing
    with pytest.warns(UserWarning, match="all NaN .*md52"):
        tds = TorchDataset(ds)
    assert list(tds.stims) == ["md50", "md51"]
    assert list(TorchDataset(ds, stimulus=None).stims) == ["md50", "md51", "md52"]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_items_and_batches_in_other_dtypes(ds, dtype):
    """Values converted from the Dataset's float32; bfloat16 (which numpy has not) is batched by torch."""
    tds = TorchDataset(ds, dtype=dtype)
    items = [tds[k] for k in range(len(tds))]
    counts = make_dataset()["spike_count"].values
    for item, (i, n_trials) in zip(items, [(0, 3), (1, 4), (2, 2)], strict=True):
        n_bins = item["response"].shape[-1]
        assert item["response"].dtype == item["stimulus"].dtype == dtype
        expected = torch.from_numpy(counts[i, :, :n_trials, :n_bins]).to(dtype)
        assert torch.equal(item["response"].isnan(), expected.isnan()) and torch.equal(item["mask"], ~expected.isnan())
        assert torch.equal(item["response"].nan_to_num(), expected.nan_to_num())
    batch = collate(items)
    assert batch["response"].dtype == batch["stimulus"].dtype == dtype
    for b, item in enumerate(items):
        n_trials, n_bins = item["response"].shape[1:]
        assert torch.equal(batch["response"][b, :, :n_trials, :n_bins].nan_to_num(), item["response"].nan_to_num())
        assert torch.equal(batch["mask"][b, :, :n_trials, :n_bins], item["mask"])
        assert torch.isnan(batch["response"][b, :, n_trials:]).all()
        assert torch.isnan(batch["response"][b, ..., n_bins:]).all()
        assert not batch["mask"][b, :, n_trials:].any() and not batch["mask"][b, ..., n_bins:].any()
        assert (batch["stimulus"][b, ..., n_bins:] == 0).all()


def test_an_edited_item_leaves_the_next_read_alone(ds):
    tds = TorchDataset(ds)
    item = tds[1]
    item["response"] = item["response"][:1]
    item["coords"]["stim"] = "edited"
    del item["mask"]
    assert_item_matches(tds[1], ds)


def test_responses_only(ds):
    tds = TorchDataset(ds, stimulus=None, dtype=torch.float64)
    batch = collate([tds[0], tds[1]])
    assert "stimulus" not in batch and batch["response"].dtype == torch.float64


def test_dataloader_batches_with_collate(ds):
    tds = TorchDataset(ds)
    loader = torch.utils.data.DataLoader(tds, batch_size=2, collate_fn=collate)
    batches = list(loader)
    assert [len(b["length"]) for b in batches] == [2, 1]
    batch, items = batches[0], [tds[0], tds[1]]
    n_bins = [item["response"].shape[-1] for item in items]
    assert batch["stimulus"].shape == (2, 1, N_FREQ, max(n_bins))
    assert batch["response"].shape == (2, 3, 4, max(n_bins))
    assert batch["length"].tolist() == n_bins
    assert torch.equal(batch["mask"], ~torch.isnan(batch["response"]))
    assert not torch.isnan(batch["stimulus"]).any()
    assert batch["coords"]["stim"] == ["md50", "md51"]
    assert batch["coords"]["stim_type"] == ["song", "call"]
    for b, item in enumerate(items):
        n_trials, n_bin = item["response"].shape[1:]
        np.testing.assert_array_equal(batch["response"][b, :, :n_trials, :n_bin], item["response"])
        assert torch.isnan(batch["response"][b, :, n_trials:]).all()
        assert torch.isnan(batch["response"][b, :, :, n_bin:]).all()
        assert torch.equal(batch["stimulus"][b, ..., :n_bin], item["stimulus"])
        assert (batch["stimulus"][b, ..., n_bin:] == 0).all()


def test_a_tiny_model_trains_with_a_masked_poisson_loss(ds):
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(TorchDataset(ds), batch_size=2, collate_fn=collate)
    model = torch.nn.Conv1d(N_FREQ, ds.sizes["neuron"], kernel_size=3, padding=1)  # log rate (B, N, T)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
    before = model.weight.detach().clone()
    for batch in loader:
        log_rate = model(batch["stimulus"][:, 0])[:, :, None, :]          # shared by the trials
        target = torch.nan_to_num(batch["response"])
        nll = torch.exp(log_rate) - target * log_rate
        loss = (nll * batch["mask"]).sum() / batch["mask"].sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        assert torch.isfinite(loss)
    assert torch.isfinite(model.weight).all() and not torch.equal(model.weight, before)


def test_reads_only_the_chunks_of_the_item_stimulus():
    ds = make_dataset()
    full, computed = ds["spike_count"].values, []

    def block(block_info=None):
        location = block_info[None]["array-location"]
        computed.append(location[0])
        return full[tuple(slice(*bounds) for bounds in location)]

    counts = da.map_blocks(block, chunks=((2, 2), (3,), (N_TRIAL_MAX,), (full.shape[-1],)),
                           dtype=np.float32)
    tds = TorchDataset(ds.assign(spike_count=(ds["spike_count"].dims, counts)))
    assert computed == []
    np.testing.assert_array_equal(tds[2]["response"].numpy(), TorchDataset(ds)[2]["response"].numpy())
    assert computed == [(2, 4)]


@pytest.mark.parametrize("how", ["lazy", "loaded"])
def test_picklable_and_loads_in_worker_processes(how):
    ds = lazy(make_dataset()) if how == "lazy" else make_dataset()
    ds["spike_count"].sum().compute()                          # dask's thread pool exists before the fork
    tds = TorchDataset(ds)
    tds[0]                                                     # a loaded one's items are built by now
    assert_item_matches(pickle.loads(pickle.dumps(tds))[0], make_dataset())
    kwargs = {"batch_size": 2, "collate_fn": collate}
    serial = list(torch.utils.data.DataLoader(tds, **kwargs))
    parallel = list(torch.utils.data.DataLoader(tds, num_workers=2, timeout=60, **kwargs))
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a["response"], b["response"])
        assert torch.equal(a["stimulus"], b["stimulus"]) and a["coords"] == b["coords"]


def test_invalid_arguments_are_explained():
    ds = make_dataset()
    with pytest.raises(ValueError, match=r"waveform=True"):
        TorchDataset(ds, stimulus="waveform")
    with pytest.raises(ValueError, match="stimulus must be"):
        TorchDataset(ds, stimulus="mel")
    with pytest.raises(ValueError, match="post"):
        TorchDataset(ds.drop_attrs())
    with pytest.raises(TypeError, match="floating"):
        TorchDataset(ds, dtype=torch.int64)


def test_stimulus_stats_on_a_split_normalise_all_stimuli(ds, tmp_path):
    train = ["md50", "md51"]
    stats = stimulus_stats(ds, stims=train)
    values = ds["spectrogram"].sel(stim=train).transpose("frequency", "stim", "time").values
    values = values.reshape(N_FREQ, -1)
    np.testing.assert_allclose(stats["mean"], np.nanmean(values, axis=1), rtol=1e-6)
    np.testing.assert_allclose(stats["std"], np.nanstd(values, axis=1), rtol=1e-5)
    assert list(stats["stim"].values) == train
    stats.to_netcdf(tmp_path / "stats.nc")
    with xr.open_dataset(tmp_path / "stats.nc") as saved:
        normalised = normalize_stimulus(ds, saved.load())
    spec = ds["spectrogram"]
    expected = (spec - stats["mean"]) / stats["std"].where(stats["std"] > 0, 1.0)
    xr.testing.assert_allclose(normalised["spectrogram"], expected.transpose(*spec.dims))
    assert np.array_equal(np.isnan(normalised["spectrogram"]), np.isnan(spec))
    assert normalised["spectrogram"].attrs["units"] == "1"
    assert (normalised["spectrogram"].isel(frequency=0).fillna(0) == 0).all()  # only centred


def test_normalize_stimulus_checks_the_bands():
    ds = make_dataset()
    stats = stimulus_stats(ds).assign_coords(frequency=np.arange(N_FREQ) * 1.0)
    with pytest.raises(ValueError, match="frequency"):
        normalize_stimulus(ds, stats)


def test_response_stats_per_neuron(ds):
    stats = response_stats(ds, stims=["md51", "md53"])
    counts = ds["spike_count"].sel(stim=["md51", "md53"]).transpose("neuron", ...).values
    counts = counts.reshape(3, -1)
    assert np.isnan(stats["mean"][0]) and np.isnan(stats["std"][0])  # A/u1 has no data there
    np.testing.assert_allclose(stats["mean"][1:], np.nanmean(counts[1:], axis=1), rtol=1e-6)
    np.testing.assert_allclose(stats["std"][1:], np.nanstd(counts[1:], axis=1), rtol=1e-5)
    assert list(stats["neuron"].values) == list(TorchDataset(ds).neurons)


@pytest.fixture(scope="module")
def opened(request) -> xr.Dataset:
    """open_aa4 on the synthetic sample corpus, with waveforms."""
    pytest.importorskip("aa4xr.synthetic")
    import aa4xr

    root = request.getfixturevalue("corpus").root
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                        # the sample has stimuli without a sound
        return aa4xr.open_aa4(root, sort_types=None, dt=0.005, pre=0.05, post=0.05, waveform=True)


def quietly(ds: xr.Dataset, **kwargs) -> TorchDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                        # skipped stimuli without a sound
        return TorchDataset(ds, **kwargs)


def test_open_aa4_loses_nothing(opened):
    tds = TorchDataset(opened, stimulus=None)
    items = [tds[k] for k in range(len(tds))]
    assert len(items) == int((opened["n_trials"].sum("neuron") > 0).sum())
    assert sum(int(item["mask"].sum()) for item in items) == int(opened["spike_count"].notnull().sum())
    total = sum(float(torch.nansum(item["response"])) for item in items)
    assert total == float(opened["spike_count"].sum())


def test_open_aa4_items_equal_the_dataset(opened):
    spectrograms, waveforms = quietly(opened), quietly(opened, stimulus="waveform")
    assert len(spectrograms) > 0 and len(waveforms) == len(spectrograms)
    for k in range(len(spectrograms)):
        assert_item_matches(spectrograms[k], opened)
        item = waveforms[k]
        n_samples = int((opened["sample_time"] < item["coords"]["duration"]).sum())
        expected = opened["waveform"].sel(stim=item["coords"]["stim"]).values[:n_samples]
        np.testing.assert_array_equal(item["stimulus"].numpy()[0], expected)


def test_open_aa4_loads_in_worker_processes(opened):
    tds, kwargs = quietly(opened), {"batch_size": 4, "collate_fn": collate}
    serial = list(torch.utils.data.DataLoader(tds, **kwargs))
    parallel = list(torch.utils.data.DataLoader(tds, num_workers=2, timeout=60, **kwargs))
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a["response"], b["response"])
        assert torch.equal(a["stimulus"], b["stimulus"])


def _baseline(tds: TorchDataset) -> torch.utils.data.Dataset:
    """The items/s benchmark's baseline loader (prebuilt per-stimulus tensors) over ``tds``."""
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "torch_epoch.py"
    spec = importlib.util.spec_from_file_location("torch_epoch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Prebuilt(tds)


@pytest.mark.parametrize("how", ["lazy", "lazy, neurons reordered", "lazy, neurons and trials reordered", "where",
                                 "loaded", "loaded, neurons reordered", "baseline"])
def test_epoch_equals_a_histogram_of_the_ground_truth(corpus, how):
    """Every batch of an epoch, whichever way items are read, against the writer's spike times."""
    import aa4xr
    from test_dataset import expected_spike_count

    dt, pre, post = 0.005, 0.05, 0.05
    ds = aa4xr.open_aa4(corpus.root, sort_types=None, dt=dt, pre=pre, post=post)
    if "neurons" in how:                                        # unsorted positions in the store
        ds = ds.isel(neuron=np.arange(ds.sizes["neuron"])[::-1])
    if "trials" in how:
        ds = ds.isel(trial=[1, 0, *range(2, ds.sizes["trial"])])
    if how == "where":                                          # dask, not a plain selection
        ds = ds.where(ds["n_trials"] > 0)
    if how.startswith(("loaded", "baseline")):
        ds = ds.load()
    tds = TorchDataset(ds, stimulus=None)
    data = _baseline(tds) if how == "baseline" else tds

    expected = expected_spike_count(corpus, ds, dt, pre, post)
    if "trials" in how:
        expected = expected[:, :, [1, 0, *range(2, ds.sizes["trial"])]]
    heard = corpus.trials[corpus.trials["neuron"].isin(ds["neuron"].values)]
    n_trials = heard.groupby(["md5", "neuron"]).size().groupby("md5").max()
    duration = corpus.stims.set_index("md5")["duration"]
    starts = -pre + np.arange(ds.sizes["time"]) * dt
    items = [(i, md5, int(n_trials[md5]), int(np.sum(starts < duration[md5] + post)))
             for i, md5 in enumerate(ds["stim"].values) if md5 in n_trials.index]
    assert len(data) == len(items) > 0

    loader = torch.utils.data.DataLoader(data, batch_size=4, collate_fn=collate)
    batches = list(loader)
    assert [md5 for batch in batches for md5 in batch["coords"]["stim"]] == [md5 for _, md5, _, _ in items]
    for batch, part in zip(batches, [items[k:k + 4] for k in range(0, len(items), 4)], strict=True):
        R, T = max(r for _, _, r, _ in part), max(t for _, _, _, t in part)
        padded = np.full((len(part), ds.sizes["neuron"], R, T), np.nan, np.float32)
        for row, (i, _, r, t) in zip(padded, part):
            row[:, :r, :t] = expected[i, :, :r, :t]
            assert np.isnan(expected[i, :, r:]).all() and np.isnan(expected[i, :, :, t:]).all()  # nothing cut
        np.testing.assert_array_equal(batch["response"].numpy(), padded)
        np.testing.assert_array_equal(batch["mask"].numpy(), ~np.isnan(padded))
        assert batch["length"].tolist() == [t for _, _, _, t in part]


def test_a_lazy_batch_is_binned_into_its_padded_arrays(opened):
    """A DataLoader's batch of a lazy Dataset is binned straight into the padded arrays collate returns,
    equal to padding the items read one by one (any order of items); reordered neurons read item by item."""
    from aa4xr.torch import _PaddedItems

    tds = TorchDataset(opened, stimulus=None)
    order = [5, 0, 3, len(tds) - 1]
    items = tds.__getitems__(order)
    assert isinstance(items, _PaddedItems)
    batch, one_by_one = collate(items), collate([tds[i] for i in order])
    assert batch["response"] is items.response  # not copied again
    np.testing.assert_array_equal(batch["response"].numpy(), one_by_one["response"].numpy())
    assert torch.equal(batch["mask"], one_by_one["mask"]) and torch.equal(batch["length"], one_by_one["length"])
    assert batch["coords"] == one_by_one["coords"]
    for item, i in zip(items, order):
        np.testing.assert_array_equal(item["response"].numpy(), tds[i]["response"].numpy())
    reordered = TorchDataset(opened.isel(neuron=np.arange(opened.sizes["neuron"])[::-1]), stimulus=None)
    assert type(reordered.__getitems__(order)) is list
