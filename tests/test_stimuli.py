"""Stimulus stage: mel spectrograms on the response bins, waveforms, sound lookup and cache.

Every expectation is computed independently of ``aa4xr.stimuli``: from signal
theory (tone, chirp, white noise, Parseval) or from a direct per-frame numpy
loop (``reference_mel``).
"""

from __future__ import annotations

import hashlib
import os
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.signal
import soundfile as sf
import xarray as xr

from aa4xr import stimuli
from aa4xr.stimuli import (locate_sounds, mel_spectrogram, read_wav, stft_power,
                           stimulus_spectrograms, stimulus_waveforms)

FS = 24414  # the AA4 wav header rate


def grid(duration: float, dt: float, pre: float = 0.0, post: float = 0.0) -> np.ndarray:
    """Bin starts ``-pre + k * dt`` with ``t_k < duration + post``."""
    time = -pre + np.arange(int(np.ceil((duration + pre + post) / dt)) + 2) * dt
    return time[time < duration + post]


def tone(freq: float, duration: float, fs: float = FS, amplitude: float = 0.5) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * freq * np.arange(int(round(duration * fs))) / fs)


def md5_of(path) -> str:
    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


def write(path, data, fs=FS) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, fs, subtype="PCM_16")
    return str(path)


def htk_bands(n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """(lo, centre, hi) of each band, written out from the HTK formula."""
    to_mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    points = 700.0 * (10.0 ** (np.linspace(to_mel(fmin), to_mel(fmax), n_mels + 2) / 2595.0) - 1.0)
    return np.stack([points[:-2], points[1:-1], points[2:]], axis=1)


def reference_mel(wave, fs, time, dt, window_ms=10.0, n_mels=32, fmin=0.0, fmax=None,
                  compression="cubic") -> np.ndarray:
    """The documented mel spectrogram, one explicit frame and one explicit band at a time."""
    fmax = fs / 2 if fmax is None else fmax
    n = 2 * int(round(window_ms * fs / 2000.0))
    bands = htk_bands(n_mels, fmin, fmax)
    narrowest = min(hi - lo for lo, _, hi in bands)
    n_fft = 2 ** int(np.ceil(np.log2(max(n, 2 * fs / narrowest))))
    window = np.array([0.5 - 0.5 * np.cos(2 * np.pi * i / n) for i in range(n)])  # periodic Hann
    freqs = np.arange(n_fft // 2 + 1) * fs / n_fft
    weights = np.zeros((n_mels, freqs.size))
    for m, (lo, c, hi) in enumerate(bands):
        for j, f in enumerate(freqs):
            if lo < f <= c:
                weights[m, j] = (f - lo) / (c - lo)
            elif c < f < hi:
                weights[m, j] = (hi - f) / (hi - c)
        weights[m] /= weights[m].sum()
    out = np.zeros((n_mels, len(time)))
    for k, t in enumerate(time):
        centre = int(round((t + dt / 2) * fs))
        segment = np.array([wave[i] if 0 <= i < len(wave) else 0.0
                            for i in range(centre - n // 2, centre + n // 2)])
        spectrum = np.fft.rfft(segment * window, n_fft)
        psd = np.abs(spectrum) ** 2 / (fs * np.sum(window**2))
        psd[1:-1] *= 2  # one-sided
        out[:, k] = weights @ psd
    if compression == "cubic":
        return out ** (1 / 3)
    if compression == "log1p":
        floor = (2.0**-15) ** 2 / 12 / (fs / 2)  # PSD of 16-bit quantisation noise
        return np.log(1 + out / floor)
    return out


@pytest.mark.parametrize("compression", ["cubic", "log1p", "none"])
@pytest.mark.parametrize("dt", [0.001, 0.005])
def test_matches_direct_reference(compression, dt):
    rng = np.random.default_rng(1)
    duration = 0.12
    n = int(duration * FS)
    wave = 0.3 * scipy.signal.chirp(np.arange(n) / FS, 300, duration, 9000) + 0.05 * rng.standard_normal(n)
    time = grid(duration, dt, pre=0.02, post=0.02)  # frames straddle onset and offset
    spec, centres = mel_spectrogram(wave, FS, time, dt, compression=compression)
    expected = reference_mel(wave, FS, time, dt, compression=compression)
    assert spec.dtype == np.float32 and spec.shape == (32, time.size)
    np.testing.assert_allclose(centres, htk_bands(32, 0, FS / 2)[:, 1], rtol=1e-12)
    # float32 output: relative precision 6e-8; allow 1e-5 relative, plus an absolute
    # floor of 1e-6 of the peak for near-zero values where float32 rounding dominates.
    np.testing.assert_allclose(spec, expected, rtol=1e-5, atol=1e-6 * expected.max())


def test_reference_with_other_parameters():
    wave = np.random.default_rng(2).standard_normal(4000) * 0.1
    time = grid(4000 / 16000, 0.002, pre=0.01)
    kw = dict(window_ms=25.0, n_mels=20, fmin=300.0, fmax=6000.0, compression="none")
    spec, _ = mel_spectrogram(wave, 16000.0, time, 0.002, **kw)
    np.testing.assert_allclose(spec, reference_mel(wave, 16000.0, time, 0.002, **kw), rtol=1e-5)


@pytest.mark.parametrize("band", [10, 16, 24, 30])
def test_tone_peaks_in_its_band(band):
    # The 10 ms Hann window's main lobe is +-200 Hz, wider than the lowest mel bands
    # (~70 Hz apart below 600 Hz), so only bands from ~700 Hz up can be told apart.
    lo, centre, hi = htk_bands(32, 0, FS / 2)[band]
    time = grid(0.3, 0.005)
    spec, _ = mel_spectrogram(tone(centre, 0.3), FS, time, 0.005)
    inside = (time > 0.01) & (time < 0.28)
    assert (spec[:, inside].argmax(axis=0) == band).all()


def test_tone_between_centres_peaks_in_a_band_holding_it():
    bands = htk_bands(32, 0, FS / 2)
    for freq in (1234.0, 4321.0, 10000.0):
        time = grid(0.2, 0.005)
        spec, _ = mel_spectrogram(tone(freq, 0.2), FS, time, 0.005)
        lo, _, hi = bands[spec[:, 20].argmax()]
        assert lo < freq < hi


def test_chirp_peak_band_rises():
    duration, f0, f1 = 2.0, 500.0, 10000.0
    t = np.arange(int(duration * FS)) / FS
    wave = 0.5 * scipy.signal.chirp(t, f0, duration, f1, method="logarithmic")
    time = grid(duration, 0.01)
    spec, _ = mel_spectrogram(wave, FS, time, 0.01)
    inside = (time > 0.01) & (time < duration - 0.02)
    peak = spec[:, inside].argmax(axis=0)
    assert (np.diff(peak) >= 0).all()
    # and it follows the instantaneous frequency at the bin's middle, to the nearest band
    centre_time = time[inside] + 0.005
    freq = f0 * (f1 / f0) ** (centre_time / duration)
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    nearest = np.abs(mel(htk_bands(32, 0, FS / 2)[:, 1])[None, :] - mel(freq)[:, None]).argmin(axis=1)
    assert np.abs(peak - nearest).max() <= 1


def test_white_noise_is_flat():
    sigma, duration, dt = 0.1, 20.0, 0.01
    noise = np.random.default_rng(3).normal(0.0, sigma, int(duration * FS))
    time = grid(duration, dt)[1:-1]  # frames wholly inside the noise
    spec, _ = mel_spectrogram(noise, FS, time, dt, compression="none")
    # White noise of variance s^2 has the one-sided PSD 2 s^2 / fs at every frequency.
    expected = 2 * np.var(noise) / FS
    mean = spec.mean(axis=1, dtype=float)
    # With dt equal to the 10 ms window, frames are disjoint, so the ~2000 frame
    # values of a band are independent: the standard error of its mean is
    # std / sqrt(n_frames) (under 3 % even for the narrowest band). Each band's mean
    # must lie within 5 standard errors of the flat level (chance of a false
    # failure over 32 bands ~2e-5) ...
    stderr = spec.std(axis=1, dtype=float) / np.sqrt(time.size)
    assert (np.abs(mean - expected) < 5 * stderr).all()
    # ... which makes the whole spectrum flat to within 15 %.
    assert np.abs(mean / expected - 1).max() < 0.15


def test_parseval_per_frame_and_over_the_sound():
    dt, pre, post = 0.001, 0.02, 0.02
    wave = np.random.default_rng(4).normal(0.0, 0.2, int(0.5 * FS)) * np.hanning(int(0.5 * FS))
    time = grid(0.5, dt, pre, post)
    psd, freqs = stft_power(wave, FS, time, dt)
    frame_power = psd.sum(axis=0) * (freqs[1] - freqs[0])
    # Per frame, Parseval is exact: the PSD integrates to the Hann-weighted mean square.
    n = 244
    window = np.sin(np.pi * np.arange(n) / n) ** 2
    pad = int((pre + post) * FS) + n  # more than any frame reaches beyond the sound
    padded = np.concatenate([np.zeros(pad), wave, np.zeros(pad)])
    for k in range(0, time.size, 37):
        c = int(round((time[k] + dt / 2) * FS)) + pad
        weighted = np.sum((padded[c - n // 2:c + n // 2] * window) ** 2) / np.sum(window**2)
        assert frame_power[k] == pytest.approx(weighted, rel=1e-10, abs=1e-15)
    # Over the sound: frames every dt seconds see each sample through sum_k w^2,
    # which equals sum(w^2) / hop up to the rounding of centres to whole samples.
    # The rounding moves each of the ~10 frames covering a sample by <= 0.5 sample,
    # changing its w^2 by <= 0.5 * max|d(w^2)/dn| = 0.5 * 1.3 pi / n; relative to
    # sum(w^2) / hop = 3 n / 8 / 24.4 that bounds the error by 2.2 %.
    energy = np.sum(wave**2) / FS
    assert frame_power.sum() * dt == pytest.approx(energy, rel=0.022)


def test_parseval_for_a_tone():
    amplitude = 0.5
    time = grid(0.3, 0.005)
    psd, freqs = stft_power(tone(2000.0, 0.3, amplitude=amplitude), FS, time, 0.005)
    inside = (time > 0.01) & (time < 0.28)
    # A sine's mean square is A^2 / 2; the Hann^2-weighted mean over a 10 ms frame
    # differs by the Hann^2 spectrum at 2f = 4 kHz, far outside its 400 Hz main lobe (< 1e-6).
    total = psd[:, inside].sum(axis=0) * (freqs[1] - freqs[0])
    np.testing.assert_allclose(total, amplitude**2 / 2, rtol=1e-5)


def test_frames_are_centred_on_bins_without_drift():
    # A 2-sample periodic Hann window is [0, 1]: the frame's power is the square of
    # the single sample at its centre, so a ramp reveals each frame's centre sample.
    dt, pre, duration = 0.001, 0.0, 3.0
    ramp = np.arange(1, int(3.1 * FS) + 1, dtype=float)
    time = grid(duration, dt, pre)
    psd, freqs = stft_power(ramp, FS, time, dt, window_ms=2000.0 / FS)
    centre = np.sqrt(psd.sum(axis=0) * (freqs[1] - freqs[0])) - 1
    assert time.size == 3000
    np.testing.assert_allclose(centre, np.round(centre), atol=1e-6)  # whole samples
    centre = np.round(centre)
    assert np.abs(centre - (time + dt / 2) * FS).max() <= 0.5
    # (a hop of int(dt * fs) = 24 samples would be 0.414 * 3000 = 1242 samples late by 3 s)


def sources_for(*entries) -> pd.DataFrame:
    return pd.DataFrame(entries, columns=["md5", "animal", "number", "path"])


def test_window_nan_and_silence_zeros(tmp_path):
    dt, pre, post = 0.005, 0.05, 0.03
    rng = np.random.default_rng(5)
    paths = [write(tmp_path / "A" / f"stim{i}.wav", rng.normal(0, 0.1, int(d * FS)))
             for i, d in enumerate((0.2, 0.5))]
    md5s = [md5_of(p) for p in paths]
    durations = pd.Series([0.2, 0.5], index=md5s)
    time = grid(0.5, dt, pre, post)
    sounds = locate_sounds(sources_for(*[(m, "A", i, p) for i, (m, p) in enumerate(zip(md5s, paths))]),
                           durations)
    for compression in ("cubic", "log1p", "none"):
        spec = stimulus_spectrograms(sounds, time, dt, post, compression=compression)["spectrogram"]
        for i, duration in enumerate(durations):
            values = spec.values[i]
            outside = time >= duration + post
            assert np.isnan(values[:, outside]).all() and not np.isnan(values[:, ~outside]).any()
            # a frame is silent when its 244-sample window misses [0, duration)
            centre = np.round((time + dt / 2) * FS)
            touches = (centre + 122 > 0) & (centre - 122 < duration * FS)
            assert (values[:, ~outside & ~touches] == 0).all()
            assert (values[:, touches & ~outside] > 0).all()


def test_spectrogram_dataset_attrs(tmp_path):
    path = write(tmp_path / "A" / "stim1.wav", tone(1000.0, 0.1))
    sounds = locate_sounds(sources_for((md5_of(path), "A", 1, path)), pd.Series({md5_of(path): 0.1}))
    ds = stimulus_spectrograms(sounds, grid(0.1, 0.005), 0.005, 0.0, compression="log1p")
    assert ds["spectrogram"].dims == ("stim", "frequency", "time")
    assert ds["spectrogram"].dtype == np.float32
    assert {"units", "long_name"} <= set(ds["spectrogram"].attrs)
    assert ds["frequency"].attrs["units"] == "Hz" and ds["time"].attrs["units"] == "s"
    assert ds["wav_status"].values.tolist() == ["ok"] and ds["wav_path"].values.tolist() == [path]
    assert ds["wav_fs"].values.tolist() == [FS]
    assert all(isinstance(v, (str, int, float)) for v in ds["spectrogram"].attrs.values())


def test_missing_wav_gives_all_nan_and_a_warning(tmp_path):
    present = write(tmp_path / "A" / "stim1.wav", tone(1000.0, 0.1))
    durations = pd.Series({md5_of(present): 0.1, "deadbeef" * 4: 0.2})
    sources = sources_for((md5_of(present), "A", 1, present),
                          ("deadbeef" * 4, "A", 2, str(tmp_path / "A" / "stim2.wav")))
    with pytest.warns(UserWarning, match="deadbeef" * 4):
        sounds = locate_sounds(sources, durations)
    ds = stimulus_spectrograms(sounds, grid(0.2, 0.005), 0.005, 0.0)
    assert np.isnan(ds["spectrogram"].sel(stim="deadbeef" * 4)).all()
    assert ds["wav_status"].values.tolist() == ["ok", "missing"]
    assert ds["wav_path"].values.tolist() == [present, ""]
    assert list(ds["stim"].values) == list(durations.index)


def test_sound_found_in_another_animal_by_its_own_number(tmp_path):
    # stim3 of animal A is another sound; the md5 is held by animal B as its stim7
    other = write(tmp_path / "A" / "wavfiles" / "stim3.wav", tone(500.0, 0.1))
    held = write(tmp_path / "B" / "wavfiles" / "stim7.wav", tone(3000.0, 0.1))
    md5 = md5_of(held)
    sources = sources_for((md5, "A", 5, str(tmp_path / "A" / "wavfiles" / "stim5.wav")),
                          (md5_of(other), "A", 3, other), (md5, "B", 7, held))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sounds = locate_sounds(sources, pd.Series({md5: 0.1, md5_of(other): 0.1}))
    assert sounds.loc[md5, "path"] == held and sounds.loc[md5, "animal"] == "B"
    assert sounds.loc[md5_of(other), "path"] == other


def test_md5_mismatch_warns_and_still_uses_the_file(tmp_path):
    path = write(tmp_path / "A" / "stim1.wav", tone(2000.0, 0.1))
    claimed = "0123456789abcdef" * 2
    with pytest.warns(UserWarning) as record:
        sounds = locate_sounds(sources_for((claimed, "A", 1, path)), pd.Series({claimed: 0.1}))
    message = str(record[0].message)
    assert claimed in message and md5_of(path) in message and path in message
    ds = stimulus_spectrograms(sounds, grid(0.1, 0.005), 0.005, 0.0)
    assert ds["wav_status"].values.tolist() == ["md5_mismatch"]
    assert ds["wav_md5"].values.tolist() == [md5_of(path)]
    assert np.isfinite(ds["spectrogram"]).all()


def test_a_matching_source_wins_over_a_mismatching_one(tmp_path):
    wrong = write(tmp_path / "A" / "stim1.wav", tone(2000.0, 0.1))
    right = write(tmp_path / "B" / "stim4.wav", tone(3000.0, 0.1))
    md5 = md5_of(right)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sounds = locate_sounds(sources_for((md5, "A", 1, wrong), (md5, "B", 4, right)), pd.Series({md5: 0.1}))
    assert sounds.loc[md5, "path"] == right and sounds.loc[md5, "status"] == "ok"


def test_other_sample_rate(tmp_path):
    low = write(tmp_path / "A" / "stim1.wav", tone(2000.0, 0.3, fs=16000), fs=16000)
    high = write(tmp_path / "B" / "stim1.wav", tone(2000.0, 0.3))
    durations = pd.Series({md5_of(low): 0.3, md5_of(high): 0.3})
    sounds = locate_sounds(sources_for((md5_of(low), "A", 1, low), (md5_of(high), "B", 1, high)), durations)
    assert sounds["fs"].tolist() == [16000.0, FS]
    time = grid(0.3, 0.005)
    ds = stimulus_spectrograms(sounds, time, 0.005, 0.0, compression="none")
    # the bands stop at the lowest Nyquist frequency so both sounds share them
    np.testing.assert_allclose(ds["frequency"].values, htk_bands(32, 0, 8000.0)[:, 1])
    inside = (time > 0.01) & (time < 0.28)
    peaks = ds["spectrogram"].values[:, :, inside].argmax(axis=1)
    band = np.abs(ds["frequency"].values - 2000.0).argmin()
    assert (peaks == band).all()
    # same tone, same level: same PSD whatever the rate (within 5 %: PCM rounding and
    # the different FFT grids sampling the window's spectrum)
    level = ds["spectrogram"].values[:, band, inside].mean(axis=1)
    assert level[0] == pytest.approx(level[1], rel=0.05)


def test_stereo_is_averaged_with_a_warning(tmp_path):
    left, right = tone(1000.0, 0.1), 0.5 * tone(3000.0, 0.1)
    path = write(tmp_path / "stereo.wav", np.stack([left, right], axis=1))
    with pytest.warns(UserWarning, match="stereo.wav"):
        wave, fs = read_wav(path)
    assert fs == FS and wave.ndim == 1
    np.testing.assert_allclose(wave, (left + right) / 2, atol=2.0**-15)  # 16-bit quantisation


def test_cache_hit_and_invalidation(tmp_path, monkeypatch):
    path = write(tmp_path / "A" / "stim1.wav", tone(1500.0, 0.2))
    md5 = md5_of(path)
    sounds = locate_sounds(sources_for((md5, "A", 1, path)), pd.Series({md5: 0.2}))
    time, cache = grid(0.2, 0.005, 0.05, 0.05), tmp_path / "cache"

    def spectrogram(**kwargs) -> np.ndarray:
        return stimulus_spectrograms(sounds, time, 0.005, 0.05, cache_dir=cache, **kwargs)["spectrogram"].values

    lazy = stimulus_spectrograms(sounds, time, 0.005, 0.05, cache_dir=cache)
    assert not cache.exists()  # nothing computed before it is asked for
    first = lazy["spectrogram"].values
    assert [p.suffix for p in cache.iterdir()] == [".npy"]  # one file, no temporary left

    def fail(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(stimuli, "mel_spectrogram", fail)
    np.testing.assert_array_equal(first, spectrogram())
    # other parameters, or a changed wav file, miss the cache
    with pytest.raises(AssertionError, match="recomputed"):
        spectrogram(n_mels=16)
    write(tmp_path / "A" / "stim1.wav", tone(1500.0, 0.25))
    os.utime(path, ns=(0, 10**18))
    with pytest.raises(AssertionError, match="recomputed"):
        spectrogram()


def test_cached_files_are_readable_as_the_umask_allows(tmp_path):
    """A lab shares one cache: spectrograms and md5 digests get the umask's permissions, like the stores
    (a private temporary file renamed into place would leave them readable by their writer alone)."""
    path = write(tmp_path / "A" / "stim1.wav", tone(1500.0, 0.2))
    cache = tmp_path / "cache"
    old = os.umask(0o022)
    try:
        md5 = stimuli.file_md5(path, cache_dir=cache / "md5")
        sounds = locate_sounds(sources_for((md5, "A", 1, path)), pd.Series({md5: 0.2}))
        stimulus_spectrograms(sounds, grid(0.2, 0.005, 0.05, 0.05), 0.005, 0.05,
                              cache_dir=cache / "spectrograms")["spectrogram"].values
    finally:
        os.umask(old)
    written = [p for p in cache.rglob("*") if p.is_file()]
    assert sorted(p.parent.name for p in written) == ["md5", "spectrograms"]
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in written)
    assert (cache / "md5").joinpath(next((cache / "md5").iterdir()).name).read_text() == md5


def test_waveforms_resampled_with_nan_past_the_end(tmp_path):
    freq = 1000.0
    short = write(tmp_path / "A" / "stim1.wav", tone(freq, 0.1))
    low = write(tmp_path / "B" / "stim1.wav", tone(freq, 0.2, fs=16000), fs=16000)
    durations = pd.Series({md5_of(short): 0.1, md5_of(low): 0.2, "f" * 32: 0.15})
    with pytest.warns(UserWarning, match="f" * 32):
        sounds = locate_sounds(sources_for((md5_of(short), "A", 1, short), (md5_of(low), "B", 1, low)),
                               durations)
    ds = stimulus_waveforms(sounds, audio_fs=24000)
    wave, t = ds["waveform"].values, ds["sample_time"].values
    assert wave.dtype == np.float32 and wave.shape == (3, int(np.ceil(0.2 * 24000)))
    np.testing.assert_allclose(t, np.arange(t.size) / 24000)
    assert ds["sample_time"].attrs["units"] == "s"
    for i, duration in enumerate(durations.iloc[:2]):
        assert np.isnan(wave[i, t >= duration]).all() and np.isfinite(wave[i, t < duration]).all()
        # away from the edges (filter transients) the resampled sine is the analytic one:
        # PCM rounding (3e-5) and the polyphase filter's passband ripple (< 1e-3)
        interior = (t > 0.01) & (t < duration - 0.01)
        np.testing.assert_allclose(wave[i, interior], 0.5 * np.sin(2 * np.pi * freq * t[interior]), atol=2e-3)
    assert np.isnan(wave[2]).all()


def test_invalid_arguments():
    with pytest.raises(ValueError, match="compression"):
        mel_spectrogram(np.zeros(100), FS, np.zeros(3), 0.005, compression="db")
    with pytest.raises(ValueError, match="Nyquist"):
        mel_spectrogram(np.zeros(100), 16000.0, np.zeros(3), 0.005, fmax=9000.0)
    with pytest.raises(ValueError, match="md5"):
        locate_sounds(pd.DataFrame({"path": []}), pd.Series(dtype=float))


def test_netcdf_round_trip(tmp_path):
    path = write(tmp_path / "A" / "stim1.wav", tone(1000.0, 0.1))
    durations = pd.Series({md5_of(path): 0.1, "e" * 32: 0.05})
    with pytest.warns(UserWarning, match="e" * 32):
        sounds = locate_sounds(sources_for((md5_of(path), "A", 1, path)), durations)
    ds = stimulus_spectrograms(sounds, grid(0.1, 0.005, 0.01, 0.01), 0.005, 0.01).merge(
        stimulus_waveforms(sounds, audio_fs=8000))
    ds.to_netcdf(tmp_path / "stimuli.nc")
    with xr.open_dataset(tmp_path / "stimuli.nc") as back:
        xr.testing.assert_identical(back.load(), ds)
