"""aa4xr.analysis and the ds.aa4 accessor against direct numpy computations.

The Dataset is built by hand following the contract of ``open_aa4``, with the
NaN patterns of the real corpus: 9, 10, 11, 20, 2 and 1 trials, unheard pairs,
a stimulus nobody heard and a neuron that heard nothing, stimuli of different
durations (ragged window ends) and trials whose recorded span cuts edge bins.
Every metric is recomputed here with plain loops, on numpy and on a
dask-chunked copy.
"""

from __future__ import annotations

import inspect
import math
from contextlib import contextmanager

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats

from aa4xr import analysis
from aa4xr.accessor import AA4Accessor

DT, PRE, POST = 0.005, 0.02, 0.01
DURATIONS = np.array([0.06, 0.1, 0.035, 0.05])
N_TRIALS = np.array([[11, 9, 0, 10, 0],
                     [9, 11, 2, 20, 0],
                     [1, 0, 11, 9, 0],
                     [0, 0, 0, 0, 0]])
# (stim, neuron, trial) -> bins of that trial outside its recorded span
SHORT_SPANS = {(0, 0, 3): slice(0, 2), (1, 3, 7): slice(-3, None), (2, 2, 0): slice(0, 1)}


@contextmanager
def raise_if_dask_computes():
    """Fail the test if dask computes anything inside (cf-xarray's helper)."""
    def scheduler(dsk, keys, **kwargs):
        raise AssertionError("dask computed where it should have stayed lazy")

    with dask.config.set(scheduler=scheduler):
        yield


def make_dataset(seed: int = 0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    S, N = N_TRIALS.shape
    R = N_TRIALS.max()
    time = -PRE + np.arange(int(round((DURATIONS.max() + POST + PRE) / DT))) * DT
    bump = np.exp(-0.5 * ((time[None, :] - 0.4 * DURATIONS[:, None]) / 0.01) ** 2)  # (stim, time)
    gain = rng.uniform(0, 3, (S, N))
    lam = 0.3 + gain[:, :, None, None] * bump[:, None, None, :]
    counts = rng.poisson(np.broadcast_to(lam, (S, N, R, time.size))).astype("f4")
    counts[np.arange(R)[None, None, :] >= N_TRIALS[:, :, None]] = np.nan
    outside_window = time[None, :] >= DURATIONS[:, None] + POST  # (stim, time)
    counts = np.where(outside_window[:, None, None, :], np.nan, counts).astype("f4")
    for (s, n, r), bins in SHORT_SPANS.items():
        window = np.flatnonzero(time < DURATIONS[s] + POST)
        counts[s, n, r, window[bins]] = np.nan
    trial_ok = np.arange(R)[None, None, :] < N_TRIALS[:, :, None]
    heard = N_TRIALS > 0
    per_trial = lambda lo, hi: np.where(trial_ok, rng.uniform(lo, hi, trial_ok.shape), np.nan).astype("f4")
    per_pair = lambda lo, hi: np.where(heard, rng.uniform(lo, hi, heard.shape), np.nan).astype("f4")
    freq = np.array([500.0, 2000.0, 8000.0])
    spectrogram = np.where(time[None, None, :] < DURATIONS[:, None, None] + POST,
                           rng.random((S, freq.size, time.size)), np.nan).astype("f4")
    snt = ("stim", "neuron", "trial")
    return xr.Dataset(
        {
            "spike_count": (snt + ("time",), counts, {"long_name": "spike count", "units": "1"}),
            "n_trials": (("stim", "neuron"), N_TRIALS.astype("i8")),
            "bg_rate": (snt, per_trial(1, 10), {"units": "Hz"}),
            "peri_rate": (snt, per_trial(1, 20), {"units": "Hz"}),
            "pre_time": (snt, per_trial(0.01, 0.02), {"units": "s"}),
            "post_time": (snt, per_trial(0.0, 0.01), {"units": "s"}),
            "zscore": (("stim", "neuron"), per_pair(-1, 3)),
            "tstat": (("stim", "neuron"), per_pair(-3, 9)),
            "pvalue": (("stim", "neuron"), per_pair(0, 1)),
            "spectrogram": (("stim", "frequency", "time"), spectrogram),
        },
        coords={
            "stim": [f"md5_{i}" for i in range(S)],
            "stim_type": ("stim", ["song", "call", "call", "mlnoise"]),
            "call_type": ("stim", ["", "DC", "Te", ""]),
            "stim_class": ("stim", ["song", "DC", "Te", "mlnoise"]),
            "duration": ("stim", DURATIONS, {"units": "s"}),
            "neuron": [f"bird{n % 2}/unit{n}" for n in range(N)],
            "animal": ("neuron", [f"bird{n % 2}" for n in range(N)]),
            "sex": ("neuron", ["M", "F", "M", "F", "M"]),
            "cell_id": ("neuron", [f"unit{n}" for n in range(N)]),
            "site": ("neuron", ["Site1", "Site1", "Site2", "Site2", "Site3"]),
            "sort_type": ("neuron", ["single", "multi", "single", "single", "multi"]),
            "electrode": ("neuron", [3, 17, 16, 30, 21]),
            "sort_id": ("neuron", [0, 1, 0, 2, 1]),
            "ldepth": ("neuron", [1400.0, np.nan, 2000.0, 2100.0, np.nan]),
            "rdepth": ("neuron", [1500.0, 1600.0, np.nan, 2200.0, np.nan]),
            "subsort_id": ("neuron", [np.nan, 1.0, 2.0, np.nan, np.nan]),
            "trial": np.arange(R),
            "time": time,
            "frequency": freq,
        },
        attrs={"dt": DT, "pre": PRE, "post": POST},
    )


def lazy(ds: xr.Dataset) -> xr.Dataset:
    """spike_count as dask, chunked across every dimension (time too, to test rechunking)."""
    return ds.assign(spike_count=ds.spike_count.variable.chunk({"stim": 2, "neuron": 3, "trial": 10, "time": 13}))


@pytest.fixture(scope="module")
def eager():
    return make_dataset()


@pytest.fixture(scope="module", params=["numpy", "dask"])
def ds(request, eager):
    return lazy(eager) if request.param == "dask" else eager


# --- independent numpy references -------------------------------------------------------------


def ref_taps(smooth_ms: float) -> np.ndarray:
    """Hann taps without their zero end points (MATLAB hanning) over 2*floor(L/2)+1 bins."""
    m = 2 * math.floor(smooth_ms / 1e3 / DT / 2) + 1
    k = np.arange(1, m + 1)
    w = 0.5 - 0.5 * np.cos(2 * np.pi * k / (m + 1))
    return w / w.sum()


def ref_smooth(x: np.ndarray, smooth_ms: float | None) -> np.ndarray:
    if not smooth_ms:
        return x.astype(float)
    w = ref_taps(smooth_ms)
    h = len(w) // 2
    out = np.full(len(x), np.nan)
    for t in range(len(x)):
        if np.isnan(x[t]):
            continue
        num = den = 0.0
        for j, wj in enumerate(w):
            u = t + j - h
            if 0 <= u < len(x) and not np.isnan(x[u]):
                num, den = num + wj * x[u], den + wj
        out[t] = num / den
    return out


def ref_psth(ds: xr.Dataset, smooth_ms, units: str) -> np.ndarray:
    c = ds.spike_count.values
    S, N, R, T = c.shape
    out = np.full((S, N, T), np.nan)
    for s in range(S):
        for n in range(N):
            mean = np.full(T, np.nan)
            for t in range(T):
                vals = [c[s, n, r, t] for r in range(R) if not np.isnan(c[s, n, r, t])]
                if vals:
                    mean[t] = sum(vals) / len(vals)
            out[s, n] = ref_smooth(mean, smooth_ms)
    return out / DT if units == "rate" else out


def ref_window_rates(ds: xr.Dataset, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-trial evoked and baseline rates (stim, neuron, trial)."""
    c, time, dur = ds.spike_count.values, ds.time.values, ds.duration.values
    S, N, R, _ = c.shape
    evoked, base = np.full((S, N, R), np.nan), np.full((S, N, R), np.nan)
    for s in range(S):
        for n in range(N):
            for r in range(R):
                for out, inside in ((evoked, (time >= 0) & (time < dur[s])), (base, time < 0)):
                    vals = c[s, n, r, inside]
                    vals = vals[~np.isnan(vals)]
                    if vals.size:
                        out[s, n, r] = vals.sum() / (vals.size * DT)
    return evoked, (base if source == "pre" else ds.bg_rate.values.astype(float))


def ref_trials(ds: xr.Dataset, s: int, n: int, smooth_ms) -> np.ndarray:
    """A pair's used trials as rates, smoothed, on the bins where all of them hold data."""
    n_trials = ds.n_trials.values[s, n]
    used = [r for r, trial in enumerate(ds.trial.values) if trial < n_trials]
    rates = ds.spike_count.values[s, n, used].astype(float) / DT
    support = ~np.isnan(rates).any(axis=0)
    rates[:, ~support] = np.nan
    return np.array([ref_smooth(r, smooth_ms)[support] for r in rates]).reshape(len(used), support.sum())


def schoppe_ccmax(resp: np.ndarray) -> float:
    """CCmax of an N x T response matrix (Schoppe et al. 2016, calc_CCnorm.m; variances over bins)."""
    n = resp.shape[0]
    sp = (np.var(resp.sum(axis=0)) - np.var(resp, axis=1).sum()) / (n * (n - 1))
    var_mean = np.var(resp.mean(axis=0))
    if var_mean == 0:
        return np.nan
    return 0.0 if sp <= 0 else math.sqrt(sp / var_mean)


def corr(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return np.nan
    return float(np.corrcoef(a, b)[0, 1])


def ref_reliability(ds: xr.Dataset, smooth_ms) -> dict[str, np.ndarray]:
    S, N = ds.n_trials.shape
    out = {k: np.full((S, N), np.nan) for k in ("split_half", "ccmax", "signal_power")}
    out |= {k: np.full(N, np.nan) for k in ("neuron_split_half", "neuron_ccmax")}
    for n in range(N):
        trials = {s: ref_trials(ds, s, n, smooth_ms) for s in range(S)}
        trials = {s: r for s, r in trials.items() if r.shape[0] >= 2}
        for s, r in trials.items():
            k = r.shape[0]
            out["split_half"][s, n] = corr(r[0::2].mean(0), r[1::2].mean(0))
            out["signal_power"][s, n] = (np.var(r.sum(0)) - np.var(r, axis=1).sum()) / (k * (k - 1))
            out["ccmax"][s, n] = schoppe_ccmax(r)
        if trials:
            out["neuron_split_half"][n] = corr(np.concatenate([r[0::2].mean(0) for r in trials.values()]),
                                               np.concatenate([r[1::2].mean(0) for r in trials.values()]))
            k = min(r.shape[0] for r in trials.values())
            out["neuron_ccmax"][n] = schoppe_ccmax(np.hstack([r[:k] for r in trials.values()]))
    for key in ("split_half", "neuron_split_half"):
        r = out[key]
        out[key.replace("split_half", "spearman_brown")] = 2 * r / (1 + r)
    return out


# --- psth and smoothing -----------------------------------------------------------------------


@pytest.mark.parametrize("smooth_ms", [21.0, None])
@pytest.mark.parametrize("units", ["rate", "count"])
def test_psth_matches_numpy(ds, smooth_ms, units):
    out = analysis.psth(ds, smooth_ms=smooth_ms, units=units)
    assert out.dims == ("stim", "neuron", "time")
    assert out.attrs["units"] == ("Hz" if units == "rate" else "1")
    np.testing.assert_allclose(out.values, ref_psth(ds, smooth_ms, units), rtol=1e-5, atol=1e-6)


def test_psth_nan_exactly_where_no_trial_has_data(eager):
    out = analysis.psth(eager).values
    np.testing.assert_array_equal(np.isnan(out), np.isnan(eager.spike_count.values).all(axis=2))
    assert not np.isnan(out[0, 0, :2]).any()  # trial 3's short span leaves the other trials there


def test_smoothing_never_leaks_across_a_nan_edge():
    """A window end neither pulls zeros in nor pushes values out (plain convolution would)."""
    x = xr.DataArray([np.nan, 2.0, 2.0, 2.0, np.nan, np.nan, np.nan, 100.0, 100.0, np.nan], dims="time",
                     coords={"time": np.arange(10) * DT})
    np.testing.assert_allclose(analysis.smooth(x, 21.0).values, x.values)


def test_smooth_taps_follow_the_documented_rule():
    impulse = xr.DataArray(np.eye(1, 41, 20)[0], dims="time", coords={"time": np.arange(41) * DT})
    for smooth_ms in (21.0, 15.0, 30.0):
        w = ref_taps(smooth_ms)
        got = analysis.smooth(impulse, smooth_ms).values
        np.testing.assert_allclose(got[20 - len(w) // 2: 21 + len(w) // 2], w)
        assert np.count_nonzero(got) == len(w)


def test_psth_is_lazy_and_rechunks_time_only(eager):
    ds = lazy(eager)
    with raise_if_dask_computes():
        out = analysis.psth(ds)
    assert isinstance(out.data, da.Array)
    assert len(out.chunksizes["time"]) == 1
    assert out.chunksizes["stim"] == ds.spike_count.chunksizes["stim"]


# --- mask, coverage, drop_empty ---------------------------------------------------------------


def test_mask_and_coverage(ds):
    heard = N_TRIALS > 0
    np.testing.assert_array_equal(analysis.mask(ds).values, heard)
    cov = analysis.coverage(ds)
    np.testing.assert_allclose(cov.stim_fraction.values, heard.mean(axis=1))
    np.testing.assert_allclose(cov.neuron_fraction.values, heard.mean(axis=0))
    assert float(cov.pair_fraction) == pytest.approx(heard.mean())
    assert int(cov.heard_pairs) == heard.sum() and int(cov.trials) == N_TRIALS.sum()
    assert list(cov.neuron_fraction.groupby("animal").mean().animal.values) == ["bird0", "bird1"]


def test_drop_empty_is_lazy_stable_and_exact(eager):
    ds = lazy(eager)
    for sub in (ds, ds.sel(neuron=["bird0/unit2", "bird1/unit3"]), ds.isel(stim=[2, 3])):
        with raise_if_dask_computes():
            out = analysis.drop_empty(sub)
            again = analysis.drop_empty(out)
        n = sub.n_trials.values > 0
        assert list(out.stim.values) == list(sub.stim.values[n.any(axis=1)])
        assert list(out.neuron.values) == list(sub.neuron.values[n.any(axis=0)])
        assert isinstance(out.spike_count.data, da.Array)
        xr.testing.assert_identical(again, out)
    assert list(analysis.drop_empty(ds.isel(stim=[2, 3])).neuron.values) == ["bird0/unit0", "bird0/unit2",
                                                                              "bird1/unit3"]


def test_drop_empty_after_where(ds):
    out = analysis.drop_empty(ds.where(ds.electrode > 16))
    assert list(out.neuron.values) == ["bird1/unit1", "bird1/unit3"]  # unit4 (e21) heard nothing
    assert list(out.stim.values) == ["md5_0", "md5_1", "md5_2"]


# --- trial rates, to_frame, response_strength -------------------------------------------------


@pytest.mark.parametrize("baseline", ["pre", "files"])
def test_trial_rates(ds, baseline):
    rates = analysis.trial_rates(ds, baseline).compute()
    evoked, base = ref_window_rates(ds, baseline)
    np.testing.assert_allclose(rates.evoked_rate.values, evoked, rtol=1e-6)
    np.testing.assert_allclose(rates.baseline_rate.values, base, rtol=1e-6)
    assert rates.attrs["baseline"] == baseline and rates.evoked_rate.attrs["units"] == "Hz"


def test_auto_baseline_uses_files_without_pre_bins(ds):
    assert analysis.trial_rates(ds).attrs["baseline"] == "pre"
    post = ds.sel(time=slice(0, None))
    assert analysis.trial_rates(post).attrs["baseline"] == "files"
    with pytest.raises(ValueError, match="pre-stimulus bins"):
        analysis.response_strength(post, baseline="pre")


@pytest.mark.parametrize("baseline", ["pre", "files"])
def test_to_frame(ds, baseline):
    table = analysis.to_frame(ds, baseline)
    evoked, base = ref_window_rates(ds, baseline)
    rows = [(s, n) for s in range(N_TRIALS.shape[0]) for n in range(N_TRIALS.shape[1]) if N_TRIALS[s, n]]
    assert len(table) == len(rows)
    stim_coords = ["stim", "stim_type", "call_type", "stim_class", "duration"]
    neuron_coords = ["neuron", "animal", "sex", "cell_id", "site", "sort_type", "electrode", "sort_id",
                     "ldepth", "rdepth", "subsort_id"]
    assert list(table.columns) == stim_coords + neuron_coords + [
        "n_trials", "evoked_rate", "baseline_rate", "zscore", "tstat", "pvalue"]
    for row, (s, n) in zip(table.itertuples(), rows):
        assert (row.stim, row.neuron, row.n_trials) == (ds.stim.values[s], ds.neuron.values[n], N_TRIALS[s, n])
        assert (row.animal, row.electrode) == (ds.animal.values[n], ds.electrode.values[n])
        assert row.evoked_rate == pytest.approx(np.nanmean(evoked[s, n]))
        assert row.baseline_rate == pytest.approx(np.nanmean(base[s, n]))
        assert row.zscore == pytest.approx(float(ds.zscore.values[s, n]))
    by_animal = table.groupby("animal")["evoked_rate"].mean()
    assert list(by_animal.index) == ["bird0", "bird1"]


def test_to_frame_same_on_dask(eager):
    pd.testing.assert_frame_equal(analysis.to_frame(lazy(eager)), analysis.to_frame(eager))


@pytest.mark.parametrize("baseline", ["pre", "files"])
def test_response_strength(ds, baseline):
    out = analysis.response_strength(ds, baseline).compute()
    evoked, base = ref_window_rates(ds, baseline)
    S, N = N_TRIALS.shape
    for s in range(S):
        for n in range(N):
            ok = ~np.isnan(evoked[s, n]) & ~np.isnan(base[s, n])
            assert int(out.n_paired[s, n]) == ok.sum()
            got = out.isel(stim=s, neuron=n)
            if ok.sum() < 2:
                assert np.isnan([got.zscore, got.tstat, got.pvalue]).all()
                continue
            d = evoked[s, n, ok] - base[s, n, ok]
            t, p = stats.ttest_rel(evoked[s, n, ok], base[s, n, ok])
            assert float(got.zscore) == pytest.approx(d.mean() / d.std(ddof=1))
            assert float(got.tstat) == pytest.approx(t)
            assert float(got.pvalue) == pytest.approx(p)
            assert float(got.rate_change) == pytest.approx(d.mean())


# --- reliability ------------------------------------------------------------------------------


@pytest.mark.parametrize("smooth_ms", [21.0, None])
def test_reliability_matches_numpy(ds, smooth_ms):
    out = analysis.reliability(ds, smooth_ms=smooth_ms).compute()
    for key, expected in ref_reliability(ds, smooth_ms).items():
        np.testing.assert_allclose(out[key].values, expected, rtol=1e-7, atol=1e-9, err_msg=key)
    ccmax = out.ccmax.values
    assert np.isnan(ccmax[N_TRIALS < 2]).all() and np.isfinite(ccmax[N_TRIALS >= 2]).all()
    assert ((ccmax[N_TRIALS >= 2] >= 0) & (ccmax[N_TRIALS >= 2] <= 1)).all()


def test_reliability_lazy_and_after_selections(eager):
    for sub in (eager.isel(trial=slice(0, 6)), eager.sel(time=slice(0, None)),
                eager.isel(stim=[1, 0], neuron=[3, 1, 2]), lazy(eager).isel(trial=slice(0, 10))):
        with raise_if_dask_computes():
            out = analysis.reliability(sub)
        assert isinstance(out.ccmax.data, da.Array) == isinstance(sub.spike_count.data, da.Array)
        out = out.compute()
        for key, expected in ref_reliability(sub.compute(), 21.0).items():
            np.testing.assert_allclose(out[key].values, expected, rtol=1e-7, atol=1e-9, err_msg=key)


def test_reliability_perfectly_repeatable_trials_reach_one(eager):
    first, counts = xr.broadcast(eager.spike_count.isel(trial=0, drop=True), eager.spike_count)
    out = analysis.reliability(eager.assign(spike_count=first.where(counts.notnull())))
    both = N_TRIALS >= 2
    np.testing.assert_allclose(out.split_half.values[both], 1.0)
    np.testing.assert_allclose(out.ccmax.values[both], 1.0)


# --- laziness, dask == numpy, selections, accessor, errors ------------------------------------


# reliability: see test_reliability_lazy_and_after_selections
@pytest.mark.parametrize("func", [analysis.psth, analysis.trial_rates, analysis.response_strength,
                                  analysis.coverage, analysis.mask])
def test_lazy_and_equal_to_numpy(eager, func):
    with raise_if_dask_computes():
        out = func(lazy(eager))
    xr.testing.assert_allclose(out.compute(), func(eager))


def test_psth_after_selections_equals_selected_psth(ds):
    full = analysis.psth(ds)
    xr.testing.assert_allclose(analysis.psth(ds.sel(stim_type="call")), full.sel(stim_type="call"))
    xr.testing.assert_allclose(analysis.psth(ds.isel(neuron=[3, 0], trial=slice(0, 9))),
                               analysis.psth(ds.isel(trial=slice(0, 9))).isel(neuron=[3, 0]))


def test_accessor_methods_call_the_public_functions(eager):
    acc = eager.aa4
    assert isinstance(acc, AA4Accessor)
    for name, method in inspect.getmembers(AA4Accessor, inspect.isfunction):
        if name.startswith("_"):
            continue
        assert f":func:`aa4xr.analysis.{name}`" in method.__doc__
        lines = inspect.getsource(method).strip().splitlines()
        assert lines[-1].strip().startswith((f"return analysis.{name}(self._ds", f"return _analysis().{name}(self._ds"))
        expected, got = getattr(analysis, name)(eager), getattr(acc, name)()
        if isinstance(got, pd.DataFrame):
            pd.testing.assert_frame_equal(got, expected)
        else:
            xr.testing.assert_identical(got, expected)
    xr.testing.assert_identical(acc.psth(smooth_ms=None, units="count"),
                                analysis.psth(eager, smooth_ms=None, units="count"))


def test_outputs_round_trip_netcdf(eager, tmp_path):
    for name, out in {"rel": analysis.reliability(eager), "strength": analysis.response_strength(eager),
                      "psth": analysis.psth(eager).to_dataset(), "cov": analysis.coverage(eager)}.items():
        for var in out.data_vars.values():
            assert {"units", "long_name"} <= set(var.attrs), (name, var.name)
        out.to_netcdf(tmp_path / f"{name}.nc")
        with xr.open_dataset(tmp_path / f"{name}.nc") as back:
            xr.testing.assert_identical(back.load(), out)


def test_inputs_are_checked(eager):
    with pytest.raises(TypeError, match="xarray.Dataset"):
        analysis.psth(eager.spike_count)
    with pytest.raises(ValueError, match="'spike_count'"):
        analysis.reliability(eager.drop_vars("spike_count"))
    with pytest.raises(ValueError, match="'n_trials'"):
        analysis.drop_empty(eager.drop_vars("n_trials"))
    with pytest.raises(ValueError, match=r"lacks \['time'\]"):
        analysis.psth(eager.isel(time=0))
    with pytest.raises(ValueError, match="'bg_rate'"):
        analysis.to_frame(eager.drop_vars("bg_rate"), baseline="files")
    with pytest.raises(ValueError, match="units"):
        analysis.psth(eager, units="Hz")
    with pytest.raises(ValueError, match="baseline"):
        analysis.response_strength(eager, baseline="spontaneous")
    with pytest.raises(ValueError, match="smooth_ms"):
        analysis.psth(eager, smooth_ms=-5)
    with pytest.raises(ValueError, match="bin width"):
        analysis.smooth(xr.DataArray([1.0, 2.0, 3.0], dims="time", coords={"time": [0, 0.1, 0.3]}))
