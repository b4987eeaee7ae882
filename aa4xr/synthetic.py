"""Write a synthetic corpus in the exact AA4 on-disk layout, with its ground truth.

:func:`write_corpus` writes ``<root>/<animal>/<unit>.h5`` and
``<root>/<animal>/wavfiles/stim<N>.wav`` with every encoding variant listed in
``AA4_FORMAT.md`` and returns a :class:`GroundTruth` of what it wrote, so that
tests can compare a reader's output with it. :func:`sample_corpus` caches the
small ``"sample"`` preset on disk.

Every variant of the format appears in the ``"sample"`` and ``"animal"`` presets:

- two writers, as the lab's code wrote them (AA4_FORMAT.md "Who wrote the
  files"): online-sort files as h5py writes them (variable-length ASCII
  strings, or fixed-length NULLPAD ones and 1-element byte arrays as h5py 2.0
  did; int64 numbers; ``tank_name``; a silent trial stores a scalar int64
  ``-999``) and offline-sort ``_ss<k>`` files as MATLAB's low-level H5 API
  writes them (every number a float64 scalar, ``sortid == k``; strings
  fixed-length NULLTERM sized to the text, no NUL; empty strings omitted;
  ``(n, 1)`` datasets, ``(1, 1)`` for ``-999``, ``(1, n)`` in one file of
  three; ``bg_rate``/``zscore``/``tstat``/``pvalue`` NaN where ``pre_time``
  is 0; no ``tank_name``);
- trial order: every protocol is a block whose presentations of different
  stimuli interleave, and ``spike_ids`` count spikes in recording order
  within it. Online files name trial groups 1..N in presentation order;
  ``_ss`` files, and every file of each animal's last site (rewritten like
  WhiWhi4522M Site1), hold them renamed in MATLAB's string order (group "2"
  of 10 trials holds presentation 10). That site keeps ``Call1c`` only, and
  ``Old_Units_<stem>.h5`` files (not unit files) lie beside its units;
- file names with and without ``_ss<k>``; one animal (:data:`ONE_ARRAY`) with
  one electrode array (``L<depth>`` missing from its names, ``ldepth`` absent,
  electrodes 1-16); the same file name in two animals; non-h5 files and a
  folder without h5 files that readers must ignore;
- ``sortType`` single, multi, noise, tdt and the typo ``singl``;
  ``source_directory`` present or absent;
- protocols ``Call1``, ``Call2`` and a re-run ``Call1c`` replaying some
  stimuli of ``Call1`` (one md5 under two protocol groups of one unit), plus
  ``class_info`` and ``extra_info`` summary groups; ``tdt_wavfile`` reads
  ``/auto/fdata/<animal>/Stims/stim<N>.wav`` (or ``"None"``);
- 9, 10 or 11 trials per group; pre-stimulus, post-stimulus and far outlying
  spikes; silent trials (``pre_time = post_time = 0``); the last trial of a
  block has ``post_time = 0``; pairs whose trials are all silent; trials with
  exactly one spike;
- stimulus numbers per animal (one md5, several numbers; one number, several
  md5s); a stimulus whose wav is missing in every animal, one whose wav is
  missing in one animal only.

The wav files are written with a header rate of ``int(SAMPLING_RATE)`` =
24414 Hz (soundfile needs an integer rate), and ``stim_duration`` is
``n_samples / 24414``.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import soundfile as sf
from scipy import special
from tqdm.auto import tqdm

#: TDT's sampling rate (Hz); wav headers hold ``int(SAMPLING_RATE)``.
SAMPLING_RATE = 24414.0625
WAV_RATE = int(SAMPLING_RATE)
#: Version of the generator's output: bump it when the written bytes change.
SAMPLE_VERSION = 4
#: Animals of the real corpus: (units, stimuli).
ANIMALS = {"BlaBro09xxF": (151, 130), "GreBlu9508M": (355, 130), "LblBlu2028M": (53, 137),
           "WhiBlu5396M": (198, 73), "WhiWhi4522M": (304, 131), "YelBlu6903F": (282, 129)}
#: The animal recorded with one (right) electrode array. Synthetic choice: the
#: documentation does not say which bird it was.
ONE_ARRAY = "WhiBlu5396M"
CALL_TYPES = ("Ag", "Be", "DC", "Di", "LT", "Ne", "Te", "Th", "Wh")
SORT_TYPES = {"single": "single", "singl": "single", "multi": "multi", "noise": "noise", "tdt": "tdt"}
SILENT = -999.0
#: Longest ``pre_time`` / ``post_time`` written (s); spikes are drawn on a grid of GRID s.
PRE_POST = (0.5, 1.5)
GRID = 0.005
#: Probabilities: silent trial, silent group, single-spike trial, outlier in a
#: block's first/last trial, re-run of Call1 for a unit.
P_SILENT, P_SILENT_GROUP, P_SINGLE, P_OUTLIER, P_RERUN = 0.02, 0.01, 0.01, 0.1, 0.25
SIZES: dict[str, dict] = {
    "sample": dict(animals=("BlaBro09xxF", "LblBlu2028M", ONE_ARRAY),
                   units_per_animal=7, stims_per_animal=9, pool=14, trials=(9, 11)),
    "animal": dict(animals=("LblBlu2028M",), units_per_animal=None, stims_per_animal=None,
                   pool=137, trials=(9, 11)),
    "full": dict(animals=tuple(ANIMALS), units_per_animal=None, stims_per_animal=None,
                 pool=170, trials=(9, 11)),
}
STIM_ATTRS = ("stim_md5", "stim_type", "stim_class", "callid", "stim_duration", "stim_source",
              "stim_source_sex", "birdid", "callerAge", "callnum", "distance",
              "original_wavfile", "tdt_wavfile")
ENCODINGS = ("str", "bytes", "array")

_POOL: list[dict] = []  # the stimuli, set in each worker by _init_worker


@dataclass
class GroundTruth:
    """What :func:`write_corpus` wrote.

    Attributes
    ----------
    root : Path
    units : DataFrame
        One row per unit file: animal, file, stem, neuron, site, electrode,
        ldepth, rdepth, sort_id, subsort_id, sort_type, sort_type_raw, sex,
        matlab_style (an ``_ss`` file as MATLAB wrote it), rerun (has
        ``Call1c``), renamed (trial groups renamed in MATLAB's string order:
        every ``_ss`` file and the rewritten site's), old_units (the
        ``Old_Units_*.h5`` file left beside it, "" if none).
    stims : DataFrame
        One row per md5 heard: md5, stim_type, call_type, stim_class, duration,
        n_samples, wav_missing_everywhere, segments (list of
        ``(kind, onset, offset, f0, f1)``, kind tone|chirp|noise, s and Hz),
        freq_min, freq_max.
    stim_files : DataFrame
        One row per (animal, number): md5, wav_path, wav_written.
    groups : DataFrame
        One row per stimulus group: animal, neuron, protocol, number, md5,
        n_trials, and every group attribute as written (strings decoded from
        bytes; ``"None"`` kept as the string).
    pairs : DataFrame
        One row per (neuron, md5): animal, n_trials over all protocols,
        protocols (comma-joined, by name) and the zscore, tstat, pvalue of the
        first protocol by name.
    trials : DataFrame
        One row per trial, sorted by (neuron, md5, order): animal, neuron, md5,
        protocol, number, trial_name (the trial group's name as written),
        presentation (1-based, within its stimulus group), order (within the
        pair: by protocol name, then presentation), bg_rate, peri_rate,
        pre_time, post_time, start, count.
    spike_times : ndarray
        float64 spike times of every trial, in ``trials`` order.
    """

    root: Path
    units: pd.DataFrame
    stims: pd.DataFrame
    stim_files: pd.DataFrame
    groups: pd.DataFrame
    pairs: pd.DataFrame
    trials: pd.DataFrame
    spike_times: np.ndarray

    def trial_spikes(self, i: int) -> np.ndarray:
        """Spike times of ``trials`` row ``i`` (empty for a silent trial)."""
        start, count = self.trials["start"].iat[i], self.trials["count"].iat[i]
        return self.spike_times[start:start + count]


# ---------------------------------------------------------------- stimuli

def _cover(rng: np.random.Generator, n: int, options: list, p: list[float]) -> list:
    """``n`` random draws of ``options``, the first ones forced to hold every option."""
    draws = [options[i] for i in rng.choice(len(options), size=n, p=p)]
    forced = [options[i] for i in rng.permutation(len(options))]
    return forced[:n] + draws[len(forced):]


def _stim_segments(rng: np.random.Generator, stim_type: str, call_type: str) -> tuple[float, list]:
    """Duration (s) and sound segments ``(kind, onset, offset, f0, f1)`` of one stimulus."""
    if stim_type == "mlnoise":
        duration = rng.uniform(1.0, 2.0)
        lo = rng.uniform(250, 2000)
        return duration, [("noise", 0.01, duration - 0.01, lo, min(lo * 2 ** rng.uniform(1, 3), 10000.0))]
    segments, t = [], rng.uniform(0.01, 0.05)
    if stim_type == "song":
        while t < 2.5:
            length, f0 = rng.uniform(0.03, 0.2), 2 ** rng.uniform(np.log2(600), np.log2(7000))
            kind = "tone" if rng.random() < 0.5 else "chirp"
            f1 = f0 if kind == "tone" else f0 * 2 ** rng.uniform(-1, 1)
            segments.append((kind, t, t + length, f0, f1))
            t += length + rng.uniform(0.01, 0.08)
    else:  # renditions of one call separated by silences
        f0 = 500 * 2 ** (CALL_TYPES.index(call_type) * 0.4 + rng.uniform(0, 0.3))
        length, kind = rng.uniform(0.05, 0.3), "chirp" if call_type in ("Be", "Wh") else "tone"
        for _ in range(rng.integers(2, 6)):
            f1 = f0 * 1.25 if kind == "chirp" else f0
            segments.append((kind, t, t + length, f0, f1))
            t += length + rng.uniform(0.2, 0.5)
            if t + length > 2.9:
                break
    return t + rng.uniform(0.02, 0.1), segments


def _synthesize(rng: np.random.Generator, segments: list, n_samples: int) -> np.ndarray:
    """int16 waveform at WAV_RATE: tones and linear chirps, or band-limited noise."""
    x = np.zeros(n_samples)
    for kind, onset, offset, f0, f1 in segments:
        i0, i1 = round(onset * WAV_RATE), min(round(offset * WAV_RATE), n_samples)
        tau = np.arange(i1 - i0) / WAV_RATE
        if kind == "noise":
            spectrum = np.fft.rfft(rng.standard_normal(tau.size))
            freqs = np.fft.rfftfreq(tau.size, 1 / WAV_RATE)
            wave = np.fft.irfft(spectrum * ((freqs >= f0) & (freqs <= f1)), tau.size)
        else:
            wave = np.sin(2 * np.pi * (f0 * tau + (f1 - f0) * tau**2 / (2 * (offset - onset))))
        ramp = np.minimum(1.0, np.minimum(tau, tau[-1] - tau) / 0.005)
        x[i0:i1] += wave * ramp / np.abs(wave).max()
    return np.round(x * 0.7 * 32767).astype(np.int16)


def _frequency_track(segments: list, duration: float) -> tuple[np.ndarray, np.ndarray]:
    """log2 of the lowest and highest sounding frequency per GRID bin (NaN = silence)."""
    centres = (np.arange(int(np.ceil(duration / GRID))) + 0.5) * GRID
    lo, hi = np.full(centres.size, np.nan), np.full(centres.size, np.nan)
    for kind, onset, offset, f0, f1 in segments:
        on = (centres >= onset) & (centres < offset)
        if kind == "noise":
            lo[on], hi[on] = np.log2(f0), np.log2(f1)
        else:
            lo[on] = hi[on] = np.log2(f0 + (f1 - f0) * (centres[on] - onset) / (offset - onset))
    return lo, hi


def _make_pool(rng: np.random.Generator, size: int) -> list[dict]:
    """The stimuli: songs, one call per type in turn, and mlnoise, shuffled."""
    n_song, n_noise = max(1, round(0.2 * size)), max(1, round(0.1 * size))
    kinds = ["song"] * n_song + ["mlnoise"] * n_noise + ["call"] * (size - n_song - n_noise)
    call_order = rng.permutation(CALL_TYPES)
    pool = []
    for i, k in enumerate(rng.permutation(len(kinds))):
        stim_type = kinds[k]
        call_type = str(call_order[k % len(CALL_TYPES)]) if stim_type == "call" else ""
        duration, segments = _stim_segments(rng, stim_type, call_type)
        n_samples = round(duration * WAV_RATE)
        buf = io.BytesIO()
        sf.write(buf, _synthesize(rng, segments, n_samples), WAV_RATE, subtype="PCM_16", format="WAV")
        wav = buf.getvalue()
        md5 = hashlib.md5(wav).hexdigest()
        sex = "MF"[i % 2]
        bird = f"Syn{i:04d}{sex}" if stim_type != "mlnoise" else "None"
        attrs = {
            "stim_md5": md5, "stim_type": stim_type, "stim_class": call_type or stim_type,
            "callid": call_type or "None", "stim_duration": n_samples / WAV_RATE,
            "stim_source": "synthetic" if stim_type == "mlnoise" else "bird",
            "stim_source_sex": sex if bird != "None" else "", "birdid": bird,  # "": omitted by MATLAB
            "callerAge": {"call": "C" if call_type in ("Be", "LT") else "A", "song": "A"}.get(stim_type, "None"),
            "callnum": len(segments) if stim_type == "call" else "None",
            "distance": float(rng.choice([2, 16, 64])) if stim_type == "call" else "None",
            "original_wavfile": f"{bird}_{stim_type}_{i}.wav",
            "tdt_wavfile": "None" if i % 4 == 0 else f"stim_{md5[:8]}.wav",
        }
        lo, hi = _frequency_track(segments, duration)
        freqs = [f for seg in segments for f in seg[3:]]
        pool.append({"md5": md5, "wav": wav, "attrs": attrs, "lo": lo, "hi": hi,
                     "duration": n_samples / WAV_RATE, "n_samples": n_samples, "segments": segments,
                     "stim_type": stim_type, "call_type": call_type,
                     "freq_min": min(freqs), "freq_max": max(freqs)})
    return pool


# ---------------------------------------------------------------- spikes

def _group_spikes(rng: np.random.Generator, stim: dict, tuning: dict, n: int,
                  all_silent: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Spike times of ``n`` trials of one stimulus: (times, trial index, pre_time, post_time).

    An inhomogeneous Poisson process (background plus the unit's response to the
    sound's frequency track), drawn for all trials at once by inverting the
    cumulative rate; spikes outside each trial's ``[-pre_time, duration +
    post_time]`` are dropped; then outliers, single-spike and silent trials.
    Times are sorted by trial, then time.
    """
    duration = stim["duration"]
    edges = np.arange(-PRE_POST[1], duration + PRE_POST[1] + GRID, GRID)
    dist = np.fmax(np.fmax(stim["lo"] - tuning["bf"], tuning["bf"] - stim["hi"]), 0.0)
    drive = np.nan_to_num(np.exp(-0.5 * (dist / tuning["bw"]) ** 2))
    rate = np.full(edges.size - 1, tuning["bg"])
    k0 = round((PRE_POST[1] + tuning["latency"]) / GRID)
    rate[k0:k0 + drive.size] += tuning["gain"] * drive[:rate.size - k0]
    cum = np.concatenate([[0.0], np.cumsum(rate) * GRID])
    counts = rng.poisson(cum[-1], n)
    times = np.interp(rng.uniform(0, cum[-1], counts.sum()), cum, edges)
    trial = np.repeat(np.arange(n), counts)
    pre, post = np.round(rng.uniform(*PRE_POST, (2, n)), 3)
    keep = (times >= -pre[trial]) & (times <= duration + post[trial])
    times, trial = times[keep], trial[keep]
    for t, sign, start in ((0, -1, -pre[0]), (n - 1, 1, duration + post[-1])):
        if rng.random() < P_OUTLIER:  # far outliers in a block's first or last trial
            extra = start + sign * rng.uniform(2, 6, rng.integers(1, 3))
            times, trial = np.append(times, extra), np.append(trial, np.full(extra.size, t))
    order = np.lexsort((times, trial))
    times, trial = times[order], trial[order]
    silent = np.flatnonzero(rng.random(n) < P_SILENT) if not all_silent else np.arange(n)
    single = np.flatnonzero(rng.random(n) < P_SINGLE)
    first = np.r_[True, trial[1:] != trial[:-1]] if trial.size else np.ones(0, bool)
    keep = ~np.isin(trial, silent) & (first | ~np.isin(trial, single))
    return times[keep], trial[keep], pre, post


def _evoked_test(bg: np.ndarray, peri: np.ndarray) -> tuple[float, float, float]:
    """zscore, tstat, pvalue of a paired test of peri_rate against bg_rate.

    zscore = mean(d) / sd(d), tstat = zscore * sqrt(n), two-sided pvalue, with
    d = peri - bg; 0, 0, 1 when sd(d) is 0.
    """
    d = peri - bg
    if np.isnan(d).any():  # MATLAB's 0/0 rates propagate
        return np.nan, np.nan, np.nan
    sd = d.std(ddof=1)
    if not sd > 0:
        return 0.0, 0.0, 1.0
    z = d.mean() / sd
    t = z * np.sqrt(d.size)
    return float(z), float(t), float(2 * special.stdtr(d.size - 1, -abs(t)))


# ---------------------------------------------------------------- HDF5 writing

def _attr_data(value, encoding: str, matlab: bool) -> tuple[np.ndarray, h5py.h5t.TypeID] | None:
    """One attribute value as a writer stored it: ``(data, file type)``, None when omitted.

    MATLAB (``h5utils.m``): every number a float64 scalar; strings fixed-length
    NULLTERM sized to the text (no NUL byte); empty strings omitted. h5py
    (``convert.py``): numbers int64 or float64; strings, rotating with
    ``encoding``, variable-length ASCII (``"str"``), fixed-length NULLPAD
    (``"bytes"``, h5py 2.0) or a 1-element fixed-length array (``"array"``).
    """
    if isinstance(value, str):
        text = value.encode()
        if matlab:
            if not text:
                return None
            tid = h5py.h5t.C_S1.copy()
            tid.set_size(len(text))
            tid.set_strpad(h5py.h5t.STR_NULLTERM)
            return np.array(text, dtype=f"S{len(text)}"), tid
        if encoding == "str":
            dtype = h5py.string_dtype("ascii")
            return np.array(text, dtype=dtype), h5py.h5t.py_create(dtype, logical=True)
        data = np.array([text] if encoding == "array" else text, dtype=f"S{max(1, len(text))}")
        return data, h5py.h5t.py_create(data.dtype)
    if isinstance(value, (int, np.integer)) and not matlab:
        data = np.array([value] if encoding == "array" else value, dtype="i8")
        return data, h5py.h5t.STD_I64LE
    return np.array(value, dtype="f8"), h5py.h5t.IEEE_F64LE


def _set_attrs(oid: h5py.h5o.ObjectID, attrs: dict, offset: int, matlab: bool) -> None:
    """Write attributes (see :func:`_attr_data`), rotating the h5py string encoding.

    Through h5py's low-level API: twice as fast as ``obj.attrs[key] = value``.
    """
    scalar = h5py.h5s.create(h5py.h5s.SCALAR)
    for j, (key, value) in enumerate(attrs.items()):
        stored = _attr_data(value, ENCODINGS[(offset + j) % 3], matlab)
        if stored is None:
            continue
        data, tid = stored
        space = h5py.h5s.create_simple(data.shape) if data.shape else scalar
        # fixed-length strings are written as their own type (no NUL-terminating conversion)
        mtype = tid if isinstance(tid, h5py.h5t.TypeStringID) and not tid.is_variable_str() else None
        h5py.h5a.create(oid, key.encode(), tid, space).write(data, mtype=mtype)


def _write_array(gid: h5py.h5g.GroupID, name: bytes, data: np.ndarray, layout: str) -> None:
    """A trial dataset: ``layout`` "h5py" (1-D, scalar int64 -999 when silent),
    "column" (MATLAB ``(n, 1)``, ``(1, 1)`` -999) or "row" (``(1, n)``)."""
    if layout == "h5py":
        data = data if data.size else np.array(int(SILENT), dtype="i8")
    else:
        data = np.full(1, SILENT) if data.size == 0 else data.astype("f8")
        data = data.reshape(-1, 1) if layout == "column" else data.reshape(1, -1)
    space = h5py.h5s.create_simple(data.shape) if data.shape else h5py.h5s.create(h5py.h5s.SCALAR)
    tid = h5py.h5t.IEEE_F64LE if data.dtype.kind == "f" else h5py.h5t.STD_I64LE
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_obj_track_times(False)  # no timestamps: same content, same bytes
    h5py.h5d.create(gid, name, tid, space, dcpl=dcpl).write(h5py.h5s.ALL, h5py.h5s.ALL, np.ascontiguousarray(data))


def _write_trial(parent: h5py.h5g.GroupID, name: str, attrs: dict, times: np.ndarray,
                 ids: np.ndarray, layout: str) -> None:
    gid = h5py.h5g.create(parent, name.encode())
    _set_attrs(gid, attrs, 0, layout != "h5py")
    _write_array(gid, b"spike_times", times, layout)
    _write_array(gid, b"spike_ids", ids, layout)


def _write_summaries(f: h5py.File, rng: np.random.Generator, protocols: list[str]) -> None:
    """``class_info`` and ``extra_info`` groups: per-protocol summaries, not stimuli."""
    for protocol in protocols:
        info = f.create_group(f"class_info/{protocol}")
        info.create_dataset("mean_rate", data=rng.gamma(2.0, 5.0, 4))
        info.create_dataset("coherence/frequency", data=np.linspace(0, 250, 33))
        info.create_dataset("coherence/coherence", data=rng.uniform(0, 1, 33))
        extra = f.create_group(f"extra_info/{protocol}")
        extra.create_dataset("sections_data/start_time", data=np.sort(rng.uniform(0, 600, 5)))
        extra.create_dataset("sections_data/end_time", data=np.sort(rng.uniform(600, 1200, 5)))
        extra.create_dataset("inter_spike_interval/counts", data=rng.poisson(20, 50))
        extra.create_dataset("inter_spike_interval/bin_edges", data=np.linspace(0, 0.1, 51))


def _init_worker(pool: list[dict]) -> None:
    global _POOL
    _POOL = pool


def string_order(n: int) -> np.ndarray:
    """Presentation (0-based) held by trial groups 1..n once MATLAB renamed them in string order."""
    return np.array(sorted(range(1, n + 1), key=str)) - 1


def _schedule(rng: np.random.Generator, n_trials: list[int]) -> list[tuple[int, int]]:
    """Presentations of one protocol's stimuli as ``(group, presentation)``, in recording order:
    rounds in which every stimulus with trials left plays once, in a new random order."""
    return [(g, r) for r in range(max(n_trials, default=0))
            for g in rng.permutation(len(n_trials)) if n_trials[g] > r]


def _write_unit(job: dict) -> dict:
    """Write one unit file; return its trials (by md5, protocol, presentation) and spikes."""
    rng, matlab, offset = np.random.default_rng(job["seed"]), job["matlab"], job["offset"]
    layout = ("row" if offset == 2 else "column") if matlab else "h5py"
    drawn = []
    for protocol, number, s, all_silent in job["groups"]:
        n = int(rng.integers(job["trials"][0], job["trials"][1] + 1))
        drawn.append([n, *_group_spikes(rng, _POOL[s], job["tuning"], n, all_silent)])
    ids = [[np.empty(0)] * n for n, *_ in drawn]
    for protocol in sorted({grp[0] for grp in job["groups"]}):
        members = [g for g, grp in enumerate(job["groups"]) if grp[0] == protocol]
        order = [(members[g], i) for g, i in _schedule(rng, [drawn[m][0] for m in members])]
        last_g, last_i = order[-1]  # the block's last trial: nothing recorded after it
        _, times, trial, pre, post = drawn[last_g]
        keep = (trial != last_i) | (times <= _POOL[job["groups"][last_g][2]]["duration"])
        drawn[last_g][1:3] = times[keep], trial[keep]
        post[last_i] = 0.0
        next_id = 1
        for g, i in order:  # TDT spike indices grow with recording time within a protocol
            count = int(np.sum(drawn[g][2] == i))
            ids[g][i] = next_id + np.arange(count)
            next_id += count
    rows, stats, spikes = [], [], []
    with h5py.File(job["path"], "w", driver="core", backing_store=True) as f:
        _set_attrs(f.id, job["attrs"], offset, matlab)
        for g, (protocol, number, s, _) in enumerate(job["groups"]):
            stim = _POOL[s]
            n, times, trial, pre, post = drawn[g]
            counts = np.bincount(trial, minlength=n)
            pre[counts == 0] = post[counts == 0] = 0.0  # no spike: no span recorded
            with np.errstate(invalid="ignore", divide="ignore"):
                bg = np.bincount(trial, (times >= -pre[trial]) & (times < 0), n) / pre
            bg[pre == 0] = np.nan if matlab else 0.0  # MATLAB's 0/0; h5py's writer stored 0
            peri = np.bincount(trial, (times >= 0) & (times <= stim["duration"]), n) / stim["duration"]
            z, t, p = _evoked_test(bg, peri)
            stats.append((n, z, t, p))
            group = f.create_group(f"{protocol}/{number}")
            _set_attrs(group.id, {**stim["attrs"], "tdt_wavfile": _tdt_wavfile(stim, job, number),
                                  "zscore": z, "tstat": t, "pvalue": p}, offset + g, matlab)
            names = np.argsort(string_order(n)) + 1 if job["renamed"] else np.arange(1, n + 1)
            starts = np.r_[0, np.cumsum(counts)]
            for i in range(n):  # presentation i is stored as trial group names[i]
                attrs = {"bg_rate": bg[i], "peri_rate": peri[i], "pre_time": pre[i], "post_time": post[i]}
                _write_trial(group.id, str(names[i]), attrs, times[starts[i]:starts[i + 1]], ids[g][i], layout)
                rows.append((stim["md5"], protocol, g, names[i], i + 1, *attrs.values(), counts[i]))
            spikes.append(times)
        _write_summaries(f, rng, sorted({grp[0] for grp in job["groups"]}))
    if job["old_units"]:
        _write_old_units(job)
    trials = pd.DataFrame(rows, columns=["md5", "protocol", "group", "trial_name", "presentation", "bg_rate",
                                         "peri_rate", "pre_time", "post_time", "count"])
    starts = np.r_[0, np.cumsum(trials["count"].to_numpy())[:-1]]
    order = np.lexsort((trials["presentation"], trials["protocol"], trials["md5"]))
    trials, starts = trials.iloc[order].reset_index(drop=True), starts[order]
    counts = trials["count"].to_numpy()
    index = np.repeat(starts - np.r_[0, np.cumsum(counts)[:-1]], counts)  # new position -> old
    flat = np.concatenate(spikes) if spikes else np.empty(0)
    return {"trials": trials, "stats": stats, "spikes": flat[index + np.arange(index.size)]}


def _tdt_wavfile(stim: dict, job: dict, number: int) -> str:
    """``tdt_wavfile`` as the lab's protocol files name the sound: ``.../Stims/stim<N>.wav``."""
    if stim["attrs"]["tdt_wavfile"] == "None":
        return "None"
    return f"/auto/fdata/{job['animal']}/Stims/stim{number}.wav"


def _write_old_units(job: dict) -> None:
    """``Old_Units_<stem>.h5``: the aborted ``Call1`` session the lab left beside a rewritten unit."""
    path = Path(job["path"]).with_name(f"Old_Units_{job['stem']}.h5")
    with h5py.File(path, "w") as f:
        f.attrs.update({k: v for k, v in job["attrs"].items()})
        for _, number, s, _ in job["groups"][:2]:
            trial = f.create_group(f"Call1/{number}/1")
            trial.create_dataset("spike_times", data=np.array([0.1, 0.2]))
            trial.create_dataset("spike_ids", data=np.array([1, 2]))


# ---------------------------------------------------------------- planning

def _units_of(rng: np.random.Generator, animal: str, n_units: int, shared: dict) -> list[dict]:
    """Names and root attributes of an animal's units, unique within the animal.

    The last unit of every two-array animal carries the corpus-wide ``shared``
    name, so the same file name occurs in several animals.
    """
    one = animal == ONE_ARRAY
    n_sites = max(2, n_units // 25)
    depths = {s: (int(rng.integers(10, 36)) * 100, int(rng.integers(10, 36)) * 100) for s in range(1, n_sites + 1)}
    ss = _cover(rng, n_units, [True, False], [0.5, 0.5])
    sort_types = _cover(rng, n_units, list(SORT_TYPES), [0.35, 0.05, 0.3, 0.1, 0.2])
    provenance = _cover(rng, n_units, [True, False], [0.6, 0.4])  # source_directory present
    if not one:
        depths[1] = shared["depths"]
    units, seen = [], set()
    for u in range(n_units):
        key = None
        if u == n_units - 1 and not one:
            key = shared["key"] if shared["key"] not in seen else None
        while key is None or key in seen:
            key = (int(rng.integers(1, n_sites + 1)), int(rng.integers(1, 17 if one else 33)),
                   int(rng.integers(0, 4)), int(rng.integers(1, 4)) if ss[u] else 0)
        seen.add(key)
        site, electrode, sort, k = key
        ldepth, rdepth = (None, depths[site][1]) if one else depths[site]
        stem = (f"Site{site}_" + (f"L{ldepth}" if ldepth else "") + f"R{rdepth}"
                + f"_e{electrode}_s{sort}" + (f"_ss{k}" if k else ""))
        attrs = {"site": f"Site{site}", "electrode": electrode, "ldepth": ldepth, "rdepth": rdepth,
                 "sortid": k if k else sort, "sortType": sort_types[u],
                 "tank_name": f"{animal}_Site{site}" if not k else None,
                 "source_directory": f"/auto/fdata/{animal}/Site{site}" if provenance[u] else None}
        units.append({"stem": stem, "sort": sort, "k": k, "site": site, "rewritten": site == n_sites,
                      "attrs": {key: v for key, v in attrs.items() if v is not None}})
    return units


def _tuning(rng: np.random.Generator) -> dict:
    """A unit's firing: background rate, gain (Hz), best frequency and bandwidth (log2 Hz), latency (s)."""
    return {"bg": 2 ** rng.uniform(1, np.log2(10)), "gain": rng.uniform(10, 40),
            "bf": rng.uniform(np.log2(500), np.log2(8000)), "bw": rng.uniform(0.3, 1.0),
            "latency": rng.uniform(0.01, 0.05)}


def _params(size: str, overrides: dict) -> dict:
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, not {size!r}")
    unknown = set(overrides) - set(SIZES[size])
    if unknown:
        raise TypeError(f"unknown override(s) {sorted(unknown)}; allowed: {sorted(SIZES[size])}")
    params = {**SIZES[size], **overrides}
    unknown = [a for a in params["animals"] if a not in ANIMALS]
    if unknown:
        raise ValueError(f"unknown animal(s) {unknown}; choose from {list(ANIMALS)}")
    return params


def _count(value: int | dict | None, animal: str, column: int) -> int:
    """A per-animal count: an int, a dict by animal, or None for the real corpus's."""
    if value is None:
        return ANIMALS[animal][column]
    return int(value[animal] if isinstance(value, dict) else value)


def _plan(rng: np.random.Generator, root: Path, params: dict, pool: list[dict], seed: int):
    """Unit-file jobs (sorted by neuron) and the (animal, number) -> stimulus table."""
    animals, size = params["animals"], len(pool)
    step = max(1, size // len(animals))
    shared = {"key": (1, int(rng.integers(1, 33)), 0, 1), "depths": (1400, 1400)}
    jobs, files = [], []
    for a, animal in enumerate(animals):
        k = min(_count(params["stims_per_animal"], animal, 1), size)
        stims = [(a * step + j) % size for j in range(k)]
        numbers = rng.choice(np.arange(1, int(1.3 * k) + 2), size=k, replace=False)
        files += [{"animal": animal, "number": int(n), "stim": s} for n, s in zip(numbers, stims)]
        n_call1 = int(np.ceil(0.6 * k))
        base = [("Call1" if j < n_call1 else "Call2", int(numbers[j]), stims[j]) for j in range(k)]
        n_units = _count(params["units_per_animal"], animal, 0)
        rerun = _cover(rng, n_units, [True, False], [P_RERUN, 1 - P_RERUN])
        for u, unit in enumerate(_units_of(rng, animal, n_units, shared)):
            replay = rng.choice(n_call1, size=min(n_call1, int(rng.integers(2, 5))), replace=False) if rerun[u] else []
            groups = base + [("Call1c", *base[j][1:]) for j in sorted(replay)]
            if unit["rewritten"]:  # the aborted Call1 moved to Old_Units_*.h5; Call1c kept
                groups = [("Call1c" if p == "Call1" else p, *rest) for p, *rest in base]
            silent = rng.random(len(groups)) < P_SILENT_GROUP
            if u == 0:  # one pair per animal with every trial silent
                silent[n_call1 if n_call1 < k else 0] = True
            jobs.append({
                "path": str(root / animal / f"{unit['stem']}.h5"), "seed": (seed, a, u),
                "animal": animal, "stem": unit["stem"], "neuron": f"{animal}/{unit['stem']}",
                "sort": unit["sort"], "k": unit["k"], "matlab": unit["k"] > 0, "offset": u % 3,
                "renamed": unit["k"] > 0 or unit["rewritten"], "old_units": unit["rewritten"],
                "attrs": unit["attrs"], "trials": tuple(params["trials"]), "tuning": _tuning(rng),
                "groups": [(*grp, bool(sil)) for grp, sil in zip(groups, silent)],
            })
    return sorted(jobs, key=lambda job: job["neuron"]), pd.DataFrame(files)


def _write_sounds_and_junk(root: Path, files: pd.DataFrame, pool: list[dict]) -> pd.Series:
    """wavfiles/stim<N>.wav (except the missing ones) and files a reader must ignore.

    The first stimulus is missing in every animal; the next stimulus held by
    two animals or more is missing in the first of them. Returns whether each
    row of ``files`` was written.
    """
    held = files.groupby("stim")["animal"].agg(list)
    everywhere = held.index[0]
    shared = held[(held.str.len() > 1) & (held.index != everywhere)]
    written = files["stim"] != everywhere
    if len(shared):
        written &= ~((files["stim"] == shared.index[0]) & (files["animal"] == shared.iloc[0][0]))
    (root / "README.txt").write_text("Synthetic AA4 corpus written by aa4xr.synthetic\n")
    (root / "CRCNSCode").mkdir()
    (root / "CRCNSCode" / "readme.m").write_text("% not a unit file\n")
    for animal in files["animal"].unique():
        (root / animal / "wavfiles").mkdir(parents=True)
        (root / animal / "notes.txt").write_text(f"{animal}: recording notes\n")
        (root / animal / f"{animal}_summary.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(108))
        (root / animal / "wavfiles" / "readme.txt").write_text("stimuli\n")
    for row, ok in zip(files.itertuples(), written):
        if ok:
            (root / row.animal / "wavfiles" / f"stim{row.number}.wav").write_bytes(pool[row.stim]["wav"])
    return written


def _run(jobs: list[dict], pool: list[dict], processes: int | None, progress: bool) -> list[dict]:
    """Write the unit files, in worker processes unless ``processes == 1``."""
    light = [{key: stim[key] for key in ("md5", "attrs", "lo", "hi", "duration")} for stim in pool]
    n = min(processes or os.cpu_count() or 1, len(jobs))
    with tqdm(total=len(jobs), unit="file", disable=not progress) as bar:
        if n <= 1:
            _init_worker(light)
            return [(_write_unit(job), bar.update())[0] for job in jobs]
        with Pool(n, _init_worker, (light,)) as workers:
            return [(res, bar.update())[0] for res in workers.imap(_write_unit, jobs, chunksize=2)]


# ---------------------------------------------------------------- ground truth

def _ground_truth(root: Path, pool: list[dict], jobs: list[dict], files: pd.DataFrame,
                  results: list[dict]) -> GroundTruth:
    units = pd.DataFrame([{
        "animal": job["animal"], "file": f"{job['stem']}.h5", "stem": job["stem"], "neuron": job["neuron"],
        "site": job["attrs"]["site"], "electrode": job["attrs"]["electrode"],
        "ldepth": float(job["attrs"].get("ldepth", np.nan)), "rdepth": float(job["attrs"].get("rdepth", np.nan)),
        "sort_id": job["sort"], "subsort_id": float(job["k"]) if job["k"] else np.nan,
        "sort_type": SORT_TYPES[job["attrs"]["sortType"]], "sort_type_raw": job["attrs"]["sortType"],
        "sex": job["animal"][-1], "matlab_style": job["matlab"],
        "rerun": any(grp[0] == "Call1c" for grp in job["groups"]),
        "renamed": job["renamed"], "old_units": f"Old_Units_{job['stem']}.h5" if job["old_units"] else "",
    } for job in jobs])
    groups = pd.DataFrame([{
        "animal": job["animal"], "neuron": job["neuron"], "protocol": protocol, "number": number,
        "md5": pool[s]["md5"], "n_trials": n,
        **{key: v if isinstance(v, str) or not job["matlab"] else float(v) for key, v in pool[s]["attrs"].items()},
        "tdt_wavfile": _tdt_wavfile(pool[s], job, number),
        "zscore": z, "tstat": t, "pvalue": p,
    } for job, res in zip(jobs, results)
        for (protocol, number, s, _), (n, z, t, p) in zip(job["groups"], res["stats"])])
    first = groups.sort_values(["neuron", "md5", "protocol"]).groupby(["neuron", "md5"], sort=False)
    pairs = first.agg(animal=("animal", "first"), n_trials=("n_trials", "sum"),
                      zscore=("zscore", "first"), tstat=("tstat", "first"), pvalue=("pvalue", "first"),
                      protocols=("protocol", ",".join)).reset_index()
    trials = pd.concat([res["trials"].assign(
        animal=job["animal"], neuron=job["neuron"],
        number=np.array([grp[1] for grp in job["groups"]])[res["trials"]["group"]],
    ) for job, res in zip(jobs, results)], ignore_index=True)
    trials["order"] = trials.groupby(["neuron", "md5"], sort=False).cumcount()
    trials["start"] = np.r_[0, np.cumsum(trials["count"].to_numpy())[:-1]]
    trials = trials[["animal", "neuron", "md5", "protocol", "number", "trial_name", "presentation", "order", "bg_rate",
                     "peri_rate", "pre_time", "post_time", "start", "count"]]
    files["md5"] = [pool[s]["md5"] for s in files["stim"]]
    files["wav_path"] = [str(root / a / "wavfiles" / f"stim{n}.wav") for a, n in zip(files["animal"], files["number"])]
    written = files.groupby("md5")["wav_written"].any()
    stims = pd.DataFrame([{
        "md5": stim["md5"], "stim_type": stim["stim_type"], "call_type": stim["call_type"],
        "stim_class": stim["attrs"]["stim_class"], "duration": stim["duration"], "n_samples": stim["n_samples"],
        "wav_missing_everywhere": not written[stim["md5"]], "segments": stim["segments"],
        "freq_min": stim["freq_min"], "freq_max": stim["freq_max"],
    } for stim in pool if stim["md5"] in written.index])
    return GroundTruth(root=root, units=units, stims=stims,
                       stim_files=files[["animal", "number", "md5", "wav_path", "wav_written"]],
                       groups=groups, pairs=pairs, trials=trials,
                       spike_times=np.concatenate([res["spikes"] for res in results]))


# ---------------------------------------------------------------- public API

def write_corpus(root: str | os.PathLike, size: str = "sample", *, seed: int = 0,
                 processes: int | None = None, progress: bool = False, **overrides) -> GroundTruth:
    """Write a synthetic corpus in the AA4 layout and return its ground truth.

    Parameters
    ----------
    root : path
        Folder to write into; created, and must be empty if it exists.
    size : {"sample", "animal", "full"}
        A preset of :data:`SIZES`: ``"sample"`` (3 animals x 7 units x 9
        stimuli, every variant, ~1 s), ``"animal"`` (LblBlu2028M: 53 units x
        137 stimuli, ~75,000 trials), ``"full"`` (6 animals with the real
        unit and stimulus counts, ~1.65 M trials).
    seed : int
        Same seed and parameters, same content (same md5s of every file).
    processes : int, optional
        Worker processes writing unit files; default ``os.cpu_count()``,
        1 writes in this process.
    progress : bool
        Show a progress bar over unit files.
    **overrides
        Preset entries to change: ``animals`` (ids from :data:`ANIMALS`),
        ``units_per_animal`` and ``stims_per_animal`` (int, dict by animal,
        or None for the real counts), ``pool`` (number of distinct stimuli),
        ``trials`` ((min, max) trials per stimulus group).

    Returns
    -------
    GroundTruth

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     truth = write_corpus(tmp, units_per_animal=2, processes=1)
    >>> len(truth.units), truth.spike_times.size == int(truth.trials["count"].sum())
    (6, True)
    >>> len(truth.trial_spikes(0)) == int(truth.trials["count"].iat[0])
    True
    """
    params = _params(size, overrides)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise FileExistsError(f"{str(root)!r} is not empty; write_corpus needs an empty or new folder")
    rng = np.random.default_rng(seed)
    pool = _make_pool(rng, params["pool"])
    jobs, files = _plan(rng, root, params, pool, seed)
    files["wav_written"] = _write_sounds_and_junk(root, files, pool)
    results = _run(jobs, pool, processes, progress)
    return _ground_truth(root, pool, jobs, files, results)


def sample_corpus(path: str | os.PathLike | None = None) -> Path:
    """The ``"sample"`` corpus (seed 0), written once and reused.

    It lives in ``<cache>/sample-v<SAMPLE_VERSION>`` (:func:`aa4xr._cache.sample_dir`)
    unless ``path`` is given. It is written into a temporary sibling folder and renamed, so a
    reader never sees half a corpus; when a concurrent writer wins, its copy
    is kept.

    Examples
    --------
    >>> root = sample_corpus()
    >>> sorted(p.name for p in root.iterdir() if p.is_dir())[:2]
    ['BlaBro09xxF', 'CRCNSCode']
    """
    if path is None:
        from ._cache import sample_dir

        path = sample_dir()
    target = Path(path)
    if target.is_dir() and any(target.iterdir()):  # an empty folder gets the sample
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        write_corpus(tmp, "sample", seed=0, processes=1)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
