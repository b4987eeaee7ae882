"""Stimulus sounds -> mel spectrograms on the response time bins, and waveforms.

The pipeline for one sound (numpy/scipy only):

1. :func:`read_wav`: mono float64 samples and the header's sample rate.
2. :func:`stft_power`: one frame per response bin ``k``, centred on the bin's
   middle ``t_k + dt/2`` (the centre sample is ``round((t_k + dt/2) * fs)``,
   so frames never drift against the bins, whatever ``dt * fs``); a periodic
   Hann window of ``window_ms`` decoupled from the hop; samples before onset
   and after the end are silence. The result is a one-sided power spectral
   density in full-scale² per Hz, so that summing it over frequency gives the
   Hann-weighted mean square of the frame (Parseval).
3. :func:`mel_filterbank`: HTK-mel triangles, each normalised to unit sum, so
   a band's value is the weighted mean PSD over the band (white noise is flat).
4. Compression: ``"cubic"`` (cube root), ``"log1p"`` (``log(1 + P / P_ref)``
   with ``P_ref`` the PSD of 16-bit quantisation noise, so the value is about
   the log signal-to-noise ratio over the 16-bit floor) or ``"none"``.
   Silence is 0 under every compression.

For a corpus, :func:`locate_sounds` finds and checks each stimulus's wav
file (a missing or unreadable one warns and leaves that stimulus NaN, see
:data:`WAV_STATUSES`), then :func:`stimulus_spectrograms` and
:func:`stimulus_waveforms` build the lazy ``(stim, ...)`` variables of the
Dataset, one dask task per stimulus.
"""

from __future__ import annotations

import hashlib
import json
import os
from fractions import Fraction
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import scipy.signal
import soundfile as sf
import xarray as xr
from dask.base import tokenize

from ._cache import atomic_write
from ._validate import warn_user

COMPRESSIONS = ("cubic", "log1p", "none")
#: Sample rate of the AA4 wav headers (TDT's 24414.0625 Hz, stored as an integer).
AA4_FS = 24414
#: Bump when the spectrogram's definition changes; cached results are then ignored.
CACHE_VERSION = 1
SOURCE_COLUMNS = ("md5", "animal", "number", "path")
#: ``wav_status`` values: the sound is used (``ok``, ``md5_mismatch``) or its variables are NaN.
WAV_STATUSES = ("ok", "md5_mismatch", "unreadable", "missing")
READABLE = ("ok", "md5_mismatch")
#: Frames transformed at once by :func:`mel_spectrogram` (about 50 MB of FFT at a time).
FRAME_BLOCK = 8192
SPECTROGRAM_ATTRS = {
    "cubic": {"units": "1",
              "long_name": "cube root of mel-band power spectral density (full scale^2/Hz)"},
    "log1p": {"units": "1",
              "long_name": "log(1 + mel-band power spectral density / 16-bit quantisation-noise PSD)"},
    "none": {"units": "Hz-1", "long_name": "mel-band power spectral density (full scale^2/Hz)"},
}


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Read a wav file as mono float64 samples and its header's sample rate.

    PCM samples are scaled to [-1, 1). A file with several channels is
    averaged to mono, with a warning naming it.

    Examples
    --------
    >>> wave, fs = read_wav("LblBlu2028M/wavfiles/stim12.wav")  # doctest: +SKIP
    >>> fs                                                       # doctest: +SKIP
    24414.0
    """
    data, fs = sf.read(path, dtype="float64", always_2d=True)
    if data.shape[1] > 1:
        warn_user(f"{os.fspath(path)}: {data.shape[1]} channels, averaged to mono")
    return data.mean(axis=1), float(fs)


def _read_sound(path: str) -> tuple[np.ndarray, float]:
    """:func:`read_wav` for a file :func:`locate_sounds` checked, naming it if it fails since."""
    try:
        data, fs = sf.read(path, dtype="float64", always_2d=True)
    except (sf.LibsndfileError, OSError) as error:
        raise OSError(f"{path}: the sound can no longer be read ({_reason(error)}); it was readable "
                      "when the Dataset was opened: open it again") from None
    return data.mean(axis=1), float(fs)


def hz_to_mel(f: float | np.ndarray) -> np.ndarray:
    """HTK mel scale: ``2595 * log10(1 + f / 700)``.

    Examples
    --------
    >>> round(float(hz_to_mel(1000.0)), 1)
    1000.0
    """
    return 2595.0 * np.log10(1.0 + np.asarray(f, float) / 700.0)


def mel_to_hz(m: float | np.ndarray) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`.

    Examples
    --------
    >>> round(float(mel_to_hz(hz_to_mel(440.0))), 6)
    440.0
    """
    return 700.0 * (10.0 ** (np.asarray(m, float) / 2595.0) - 1.0)


def mel_edges(n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """The ``n_mels + 2`` triangle corners in Hz, equally spaced in mel.

    Band ``m`` rises from ``edges[m]`` to its centre ``edges[m + 1]`` and falls
    to ``edges[m + 2]``.

    Examples
    --------
    >>> mel_edges(2, 0.0, 1000.0).round(1)
    array([   0. ,  240.9,  564.7, 1000. ])
    """
    if not (isinstance(n_mels, (int, np.integer)) and n_mels >= 1):
        raise ValueError(f"n_mels={n_mels!r}: expected an integer >= 1")
    if not (0.0 <= fmin < fmax):
        raise ValueError(f"fmin={fmin!r}, fmax={fmax!r}: expected 0 <= fmin < fmax (Hz)")
    return mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))


def mel_filterbank(n_fft: int, fs: float, n_mels: int = 32, fmin: float = 0.0,
                   fmax: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Triangular HTK-mel filterbank on the bins of an ``n_fft``-point real FFT.

    Each row is a triangle (0 at its outer corners, 1 at its centre) divided by
    its sum over the bins, so ``weights @ psd`` is each band's weighted mean
    power spectral density.

    Parameters
    ----------
    n_fft : int
        FFT length; the bins are ``k * fs / n_fft`` for ``k = 0 .. n_fft // 2``.
    fs : float
        Sample rate in Hz.
    n_mels : int
        Number of bands.
    fmin, fmax : float
        Lowest and highest corner in Hz; ``fmax`` defaults to ``fs / 2``.

    Returns
    -------
    weights : ndarray, shape (n_mels, n_fft // 2 + 1)
    centres : ndarray, shape (n_mels,)
        Band centres in Hz.

    Raises
    ------
    ValueError
        When a band holds no FFT bin (use a larger ``n_fft`` or fewer bands).

    Examples
    --------
    >>> weights, centres = mel_filterbank(512, 24414.0)
    >>> weights.shape, bool(np.allclose(weights.sum(axis=1), 1.0))
    ((32, 257), True)
    """
    fmax = fs / 2 if fmax is None else fmax
    if fmax > fs / 2 * (1 + 1e-9):
        raise ValueError(f"fmax={fmax!r} Hz is above the Nyquist frequency {fs / 2} Hz")
    edges = mel_edges(n_mels, fmin, fmax)
    lo, centre, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    f = np.fft.rfftfreq(n_fft, 1.0 / fs)[None, :]
    triangles = np.clip(np.minimum((f - lo) / (centre - lo), (hi - f) / (hi - centre)), 0.0, None)
    sums = triangles.sum(axis=1, keepdims=True)
    if np.any(sums == 0):
        empty = np.flatnonzero(sums[:, 0] == 0).tolist()
        raise ValueError(f"mel bands {empty} hold no bin of a {n_fft}-point FFT at {fs} Hz: "
                         "use a larger n_fft or fewer bands")
    return triangles / sums, edges[1:-1]


def window_length(window_ms: float, fs: float) -> int:
    """Samples in the analysis window: ``window_ms`` rounded to an even count (>= 2).

    Examples
    --------
    >>> window_length(10.0, 24414.0)
    244
    """
    if not window_ms > 0:
        raise ValueError(f"window_ms={window_ms!r}: expected a positive duration in ms")
    return max(2, 2 * int(round(window_ms * fs / 2000.0)))


def fft_length(n_window: int, fs: float, edges: np.ndarray) -> int:
    """The smallest power of two that holds the window and resolves every band.

    Every band's support (``edges[m + 2] - edges[m]``) spans at least two bin
    spacings, so each band averages at least one bin; the extra length is zero
    padding, which only interpolates the window's spectrum.

    Examples
    --------
    >>> fft_length(244, 24414.0, mel_edges(32, 0.0, 12207.0))
    512
    """
    narrowest = float(np.min(edges[2:] - edges[:-2]))
    return 1 << int(np.ceil(np.log2(max(n_window, 2.0 * fs / narrowest))))


def frame_centres(time: np.ndarray, dt: float, fs: float) -> np.ndarray:
    """Sample index at the middle of each bin: ``round((t_k + dt / 2) * fs)``.

    Computed from each bin's own start, so the error stays within half a
    sample for every ``k`` (no accumulated hop).

    Examples
    --------
    >>> frame_centres(np.arange(4) * 0.001, 0.001, 24414.0)
    array([12, 37, 61, 85])
    """
    return np.rint((np.asarray(time, float) + dt / 2) * fs).astype(np.int64)


def stft_power(wave: np.ndarray, fs: float, time: np.ndarray, dt: float, *,
               window_ms: float = 10.0, n_fft: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One-sided power spectral density of one Hann frame per response bin.

    Frame ``k`` holds the ``N`` samples ``c_k - N/2 .. c_k + N/2 - 1`` around
    ``c_k`` = :func:`frame_centres`, weighted by a periodic Hann window of
    ``N`` = :func:`window_length` samples (its peak on ``c_k``); samples outside
    the sound are 0. ``psd[k] = c |X_k|^2 / (fs * sum(w^2))`` with ``c = 2``
    except at 0 Hz and Nyquist, so ``psd.sum(axis=0) * fs / n_fft`` is each
    frame's Hann-weighted mean square (Parseval).

    Parameters
    ----------
    wave : ndarray, shape (n_samples,)
        Mono samples; sample ``i`` is at ``i / fs`` seconds from onset.
    fs : float
        Sample rate in Hz.
    time : ndarray, shape (n_bins,)
        Bin starts ``t_k`` in seconds from onset.
    dt : float
        Bin width in seconds.
    window_ms : float
        Analysis window length in milliseconds.
    n_fft : int, optional
        FFT length (>= the window length); the window length rounded up to a
        power of two by default.

    Returns
    -------
    psd : ndarray, shape (n_fft // 2 + 1, n_bins)
        Full-scale² per Hz; all 0 for frames that miss the sound.
    frequencies : ndarray, shape (n_fft // 2 + 1,)
        Hz.

    Examples
    --------
    >>> fs, time = 8000.0, np.arange(10) * 0.01
    >>> wave = np.sin(2 * np.pi * 1000.0 * np.arange(800) / fs)
    >>> psd, f = stft_power(wave, fs, time, 0.01)
    >>> float(f[psd[:, 5].argmax()])
    1000.0
    >>> bool(np.isclose(psd[:, 5].sum() * (f[1] - f[0]), 0.5))  # Parseval: a sine's power
    True
    """
    hits, power, scale = _frame_power(wave, fs, time, dt, window_ms, n_fft)
    psd = np.zeros((scale.size, np.size(time)))
    psd[:, hits] = (power * scale).T
    return psd, np.fft.rfftfreq(2 * (scale.size - 1), 1.0 / fs)


def _frame_power(wave: np.ndarray, fs: float, time: np.ndarray, dt: float, window_ms: float,
                 n_fft: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The kernel of :func:`stft_power`, frame-major and only for frames that touch the sound.

    Returns the indices of those frames, their ``|X|^2`` (frame, bin) and the
    per-bin factor that turns ``|X|^2`` into a one-sided PSD.
    """
    wave, time = np.asarray(wave, float), np.asarray(time, float)
    if wave.ndim != 1 or time.ndim != 1:
        raise ValueError(f"wave and time must be 1-D, got shapes {wave.shape} and {time.shape}")
    if not (fs > 0 and dt > 0):
        raise ValueError(f"fs={fs!r}, dt={dt!r}: expected positive values")
    n_window = window_length(window_ms, fs)
    n_fft = n_fft or 1 << int(np.ceil(np.log2(n_window)))
    if n_fft < n_window:
        raise ValueError(f"n_fft={n_fft} is shorter than the {n_window}-sample window")
    starts = frame_centres(time, dt, fs) - n_window // 2
    hits = np.flatnonzero((starts > -n_window) & (starts < wave.size))
    padded = np.concatenate([np.zeros(n_window), wave, np.zeros(n_window)])
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_window)[starts[hits] + n_window]
    window = scipy.signal.get_window("hann", n_window)
    frames *= window
    spectrum = np.fft.rfft(frames, n=n_fft, axis=-1)  # numpy's pocketfft: ~2x scipy.fft here
    power = np.square(spectrum.real)
    power += np.square(spectrum.imag)
    scale = np.full(n_fft // 2 + 1, 2.0 / (fs * np.sum(window**2)))
    scale[[0, -1]] /= 2.0  # 0 Hz and Nyquist (n_fft is even) are not doubled
    return hits, power, scale


def compress(power: np.ndarray, compression: str, fs: float) -> np.ndarray:
    """Apply ``"cubic"``, ``"log1p"`` or ``"none"`` to a power spectral density.

    ``"log1p"`` is ``log(1 + P / P_ref)`` with ``P_ref = (2**-15)**2 / 12 / (fs / 2)``,
    the one-sided PSD of 16-bit quantisation noise.

    Examples
    --------
    >>> compress(np.array([0.0, 8.0]), "cubic", 24414.0)
    array([0., 2.])
    """
    if compression == "cubic":
        return np.cbrt(power)
    if compression == "log1p":
        return np.log1p(power / (2.0**-30 / 12.0 / (fs / 2.0)))
    if compression == "none":
        return power
    raise ValueError(f"compression={compression!r}: expected one of {list(COMPRESSIONS)}")


def mel_spectrogram(wave: np.ndarray, fs: float, time: np.ndarray, dt: float, *,
                    window_ms: float = 10.0, n_mels: int = 32, fmin: float = 0.0,
                    fmax: float | None = None, compression: str = "cubic") -> tuple[np.ndarray, np.ndarray]:
    """Mel spectrogram of one sound, one frame per response bin.

    :func:`stft_power` (frames centred on ``t_k + dt/2``, Hann window of
    ``window_ms``, FFT length from :func:`fft_length`), then
    :func:`mel_filterbank`, then :func:`compress`.

    Parameters
    ----------
    wave : ndarray, shape (n_samples,)
        Mono samples, sample ``i`` at ``i / fs`` seconds from onset.
    fs : float
        Sample rate in Hz.
    time : ndarray, shape (n_bins,)
        Bin starts in seconds from onset (may start before 0).
    dt : float
        Bin width in seconds.
    window_ms, n_mels, fmin, fmax, compression
        Analysis window (ms), number of mel bands, band range in Hz (``fmax``
        defaults to ``fs / 2``), and one of ``"cubic"``, ``"log1p"``, ``"none"``.

    Returns
    -------
    spectrogram : ndarray, shape (n_mels, n_bins), float32
        0 where a frame misses the sound.
    centres : ndarray, shape (n_mels,)
        Band centres in Hz.

    Examples
    --------
    >>> fs, time = 24414.0, np.arange(100) * 0.005
    >>> wave = np.sin(2 * np.pi * 3000.0 * np.arange(12207) / fs)
    >>> spec, centres = mel_spectrogram(wave, fs, time, 0.005)
    >>> spec.shape, int(spec[:, 50].argmax()) == int(np.abs(centres - 3000.0).argmin())
    ((32, 100), True)
    """
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression={compression!r}: expected one of {list(COMPRESSIONS)}")
    fmax = fs / 2 if fmax is None else fmax
    n_fft = fft_length(window_length(window_ms, fs), fs, mel_edges(n_mels, fmin, fmax))
    weights, centres = mel_filterbank(n_fft, fs, n_mels, fmin, fmax)
    time = np.asarray(time, float)
    mel = np.zeros((n_mels, time.size))
    for lo in range(0, time.size, FRAME_BLOCK):  # bounded memory, whatever the number of bins
        hits, power, scale = _frame_power(wave, fs, time[lo:lo + FRAME_BLOCK], dt, window_ms, n_fft)
        mel[:, lo + hits] = (power @ (weights * scale).T).T
    return compress(mel, compression, fs).astype(np.float32), centres


def file_md5(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> str:
    """Hex md5 of a file's bytes.

    With ``cache_dir``, the digest is remembered there, keyed by the file's
    path, size and mtime, so re-opening a corpus does not re-hash its sounds.
    """
    key = None
    if cache_dir is not None:
        stat = os.stat(path)
        token = f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}".encode()
        key = Path(cache_dir) / hashlib.sha1(token).hexdigest()
        if key.is_file():
            return key.read_text()
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if key is not None:
        with atomic_write(key) as tmp:
            tmp.write_text(digest.hexdigest())
    return digest.hexdigest()


def locate_sounds(sources: pd.DataFrame, durations: pd.Series, *,
                  cache_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Find and check the wav file of every stimulus.

    A stimulus (an md5) may be held by several animals, each under its own
    number. Its candidates are the rows of ``sources`` with its md5, in
    order. Each existing candidate is checked first as a sound (its header
    must open as a wav holding samples), then by md5: the first readable
    file whose bytes hash to the md5 is used. Otherwise the first readable
    file is used with a warning naming both md5s and the file
    (``"md5_mismatch"``). When files exist but none is readable (no
    permission, a folder in the way, empty, a truncated header, not a wav),
    a warning names the first and why (``"unreadable"``); with no file at
    all, a warning names the md5 (``"missing"``). Neither stops anything:
    that stimulus's spectrogram and waveform are all NaN.

    Parameters
    ----------
    sources : DataFrame
        One row per (animal, number) that held an md5; columns ``md5``,
        ``animal``, ``number``, ``path`` (the file need not exist).
    durations : Series
        Seconds, indexed by md5; its index gives the stimuli and their order.
    cache_dir : path, optional
        Where to remember the files' md5s (see :func:`file_md5`).

    Returns
    -------
    DataFrame
        Indexed by ``stim`` (the md5s of ``durations``); columns ``duration``,
        ``path`` (the file used or found unreadable, ``""`` if none),
        ``animal``, ``status`` (one of :data:`WAV_STATUSES`), ``reason``
        (why a file is unreadable, ``""`` otherwise), ``file_md5`` (of the
        file used) and ``fs`` (its header's rate, NaN if none).

    Examples
    --------
    >>> sources = pd.DataFrame({"md5": ["ab"], "animal": ["A"], "number": [1],
    ...                         "path": ["/nowhere/stim1.wav"]})
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     locate_sounds(sources, pd.Series({"ab": 1.5}))["status"].tolist()
    ['missing']
    """
    missing = [c for c in SOURCE_COLUMNS if c not in sources.columns]
    if missing:
        raise ValueError(f"sources lacks columns {missing}; expected {list(SOURCE_COLUMNS)}")
    if not durations.index.is_unique:
        raise ValueError("durations must be indexed by unique md5s")
    candidates = dict(tuple(sources.drop_duplicates(["md5", "path"]).groupby("md5", sort=False)))
    rows = []
    for md5, duration in durations.items():
        found = candidates.get(md5, sources.iloc[:0])
        rows.append({"stim": md5, "duration": float(duration), **_pick_source(md5, found, cache_dir)})
    return pd.DataFrame(rows, columns=["stim", "duration", "path", "animal", "status", "reason", "file_md5",
                                       "fs"]).set_index("stim")


def _reason(error: BaseException) -> str:
    """The cause of a failed read in words, without repeating the path."""
    if isinstance(error, sf.LibsndfileError):
        return f"not a readable wav: {error.error_string.rstrip('.')}"
    return error.strerror or str(error) if isinstance(error, OSError) else str(error)


def check_sound(path: str) -> tuple[float, int, str]:
    """``(sample rate, channels, "")`` of a readable wav, or ``(nan, 0, reason)``.

    ``reason`` says why ``path`` cannot serve as a sound: absent
    (``"missing"``), a folder on the way that cannot be searched, a broken
    link, not a regular file, empty, a header that libsndfile cannot open
    (truncated, not a wav) or no samples.

    Examples
    --------
    >>> check_sound("/nowhere/stim1.wav")
    (nan, 0, 'missing')
    """
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return np.nan, 0, f"a broken symbolic link to {os.readlink(path)}"
        return np.nan, 0, "missing"
    except OSError as error:  # a folder on the way cannot be searched, is a file, or loops
        return np.nan, 0, f"its folder {os.path.dirname(path)} cannot be read ({_reason(error)})"
    if not os.path.isfile(path):
        return np.nan, 0, "not a regular file" + (" (a folder)" if os.path.isdir(path) else "")
    if stat.st_size == 0:
        return np.nan, 0, "empty (0 bytes)"
    try:
        with open(path, "rb") as f:
            info = sf.info(f)
    except (sf.LibsndfileError, OSError) as error:
        return np.nan, 0, _reason(error)
    if info.frames == 0:
        return np.nan, 0, "its header holds no samples"
    return float(info.samplerate), int(info.channels), ""


def _pick_source(md5: str, candidates: pd.DataFrame, cache_dir) -> dict:
    """The file to use for ``md5`` among its candidate rows (see :func:`locate_sounds`)."""
    fallback = unreadable = None
    for row in candidates.itertuples():
        fs, channels, reason = check_sound(str(row.path))
        pick = {"path": str(row.path), "animal": str(row.animal), "reason": reason, "fs": fs}
        if reason == "missing":
            continue
        if reason:
            unreadable = unreadable or pick
            continue
        pick["file_md5"] = file_md5(row.path, cache_dir)
        if pick["file_md5"].lower() == str(md5).lower():
            return _used({**pick, "status": "ok"}, channels)
        fallback = fallback or (pick, channels)
    if fallback is not None:
        pick, channels = fallback
        warn_user(f"{pick['path']}: md5 of the file's bytes is {pick['file_md5']}, "
                  f"not the stimulus's {md5}; using it anyway")
        return _used({**pick, "status": "md5_mismatch"}, channels)
    if unreadable is not None:
        warn_user(f"{unreadable['path']}: the sound of stimulus {md5} cannot be read: {unreadable['reason']}; "
                  "its spectrogram and waveform are all NaN (its responses are kept)")
        return {**unreadable, "status": "unreadable", "file_md5": ""}
    tried = ", ".join(map(str, candidates["path"])) or "no file listed"
    warn_user(f"no sound file for stimulus {md5} (tried: {tried}); its spectrogram and waveform are all NaN")
    return {"path": "", "animal": "", "status": "missing", "reason": "", "file_md5": "", "fs": np.nan}


def _used(pick: dict, channels: int) -> dict:
    """``pick``, after warning that a file of several channels is averaged to mono."""
    if channels > 1:
        warn_user(f"{pick['path']}: {channels} channels, averaged to mono")
    return pick


def _cache_file(cache_dir: Path, md5: str, path: str, time: np.ndarray, params: dict) -> Path:
    """Cache file of one stimulus's spectrogram: keyed by the wav's size and mtime and every parameter."""
    stat = os.stat(path)
    key = json.dumps({"version": CACHE_VERSION, "path": path, "size": stat.st_size,
                      "mtime_ns": stat.st_mtime_ns, "time": hashlib.sha256(time.tobytes()).hexdigest(),
                      **params}, sort_keys=True)
    return cache_dir / f"{md5}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npy"


def _resolve_fmax(sounds: pd.DataFrame, fmax: float | None) -> float:
    """``fmax``, by default the lowest Nyquist frequency among the sounds found."""
    found = sounds[sounds["status"].isin(READABLE)]
    if found.empty:
        return float(AA4_FS / 2 if fmax is None else fmax)
    lowest = found["fs"].idxmin()
    nyquist = found.loc[lowest, "fs"] / 2
    if fmax is None:
        return float(nyquist)
    if fmax > nyquist:
        raise ValueError(f"fmax={fmax!r} Hz is above the Nyquist frequency {nyquist} Hz "
                         f"of {found.loc[lowest, 'path']}")
    return float(fmax)


def stimulus_spectrograms(sounds: pd.DataFrame, time: np.ndarray, dt: float, post: float, *,
                          window_ms: float = 10.0, n_mels: int = 32, fmin: float = 0.0,
                          fmax: float | None = None, compression: str = "cubic",
                          cache_dir: str | os.PathLike | None = None) -> xr.Dataset:
    """Mel spectrograms of every stimulus on the response time bins.

    Bin ``k`` of a stimulus is inside its window when
    ``time[k] < duration + post``; outside it the spectrogram is NaN, inside
    it is :func:`mel_spectrogram` of the stimulus's file (0 where the window
    holds only silence). A stimulus whose sound is missing or unreadable is
    all NaN. The result is lazy: one dask task per stimulus, computed (and
    cached) only when its values are asked for.

    Parameters
    ----------
    sounds : DataFrame
        :func:`locate_sounds`'s table (its order gives ``stim``).
    time : ndarray
        Bin starts ``t_k = -pre + k * dt`` in seconds from onset.
    dt, post : float
        Bin width and seconds kept after each stimulus's end.
    window_ms, n_mels, fmin, compression
        See :func:`mel_spectrogram`.
    fmax : float, optional
        Highest band corner in Hz; by default the lowest Nyquist frequency
        among the files (12207 Hz for AA4), so every stimulus shares the bands.
    cache_dir : path, optional
        Folder for one ``.npy`` per (stimulus, parameters, wav size and
        mtime), written atomically; a later call with the same key reads it.

    Returns
    -------
    xarray.Dataset
        ``spectrogram (stim, frequency, time)`` float32 (a dask array chunked
        by stimulus), with the coordinates ``frequency`` (band centres, Hz),
        ``time`` and, along ``stim``, the diagnostics ``wav_path``,
        ``wav_status``, ``wav_reason``, ``wav_md5`` (str) and ``wav_fs`` (Hz)
        from ``sounds``.

    Examples
    --------
    >>> sounds = locate_sounds(sources, durations)            # doctest: +SKIP
    >>> ds = stimulus_spectrograms(sounds, time, 0.005, 0.1)  # doctest: +SKIP
    >>> ds.spectrogram.sel(frequency=3000, method="nearest")  # doctest: +SKIP
    """
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression={compression!r}: expected one of {list(COMPRESSIONS)}")
    time = np.asarray(time, float)
    fmax = _resolve_fmax(sounds, fmax)
    centres = mel_edges(n_mels, fmin, fmax)[1:-1]
    params = {"dt": float(dt), "window_ms": float(window_ms), "n_mels": int(n_mels),
              "fmin": float(fmin), "fmax": fmax, "compression": compression}
    n_inside = np.searchsorted(time, sounds["duration"].to_numpy(float) + post)  # bins t_k < duration + post
    time_key = f"time-{tokenize(time)}"
    blocks = [(_spectrogram_block, md5, path, time_key, int(n), params, cache_dir)
              for md5, path, n in zip(sounds.index, _usable_paths(sounds), n_inside)]
    spectrogram = _per_stimulus("spectrogram", blocks, (n_mels, time.size), {time_key: time})
    diagnostics = {
        "wav_path": (sounds["path"], {"long_name": "wav file used, or found unreadable"}),
        "wav_status": (sounds["status"], {"long_name": f"wav file check: {', '.join(WAV_STATUSES)}"}),
        "wav_reason": (sounds["reason"], {"long_name": "why the wav file is unreadable"}),
        "wav_md5": (sounds["file_md5"], {"long_name": "md5 of the wav file's bytes"}),
        "wav_fs": (sounds["fs"], {"long_name": "wav header sample rate", "units": "Hz"}),
    }
    return xr.Dataset(
        {"spectrogram": (("stim", "frequency", "time"), spectrogram,
                         {**SPECTROGRAM_ATTRS[compression], "mel_scale": "htk", "window": "hann",
                          **{k: v for k, v in params.items() if k != "dt"}})},
        coords={
            "stim": sounds.index.to_numpy(object),
            **{name: ("stim", values.to_numpy(float if name == "wav_fs" else object), attrs)
               for name, (values, attrs) in diagnostics.items()},
            "frequency": ("frequency", centres, {"long_name": "mel band centre frequency", "units": "Hz"}),
            "time": ("time", time, {"long_name": "bin start from stimulus onset", "units": "s"}),
        },
    )


def _usable_paths(sounds: pd.DataFrame) -> list[str]:
    """Per stimulus, the wav file to read, or ``""`` when its variables stay NaN."""
    return [path if status in READABLE else "" for path, status in zip(sounds["path"], sounds["status"])]


def _per_stimulus(name: str, blocks: list[tuple], shape: tuple[int, ...], shared: dict) -> da.Array:
    """A lazy float32 ``(stim, *shape)`` array, one dask task (a ``blocks`` entry) per stimulus.

    ``shared`` holds graph entries the tasks refer to by key (e.g. the time
    bins), so a scheduler ships them once rather than once per stimulus.
    """
    if not blocks:
        return da.zeros((0, *shape), np.float32)
    token = f"{name}-{tokenize(blocks, shared)}"
    graph = {**shared, **{(token, i, *(0,) * len(shape)): block for i, block in enumerate(blocks)}}
    return da.Array(graph, token, chunks=((1,) * len(blocks), *((n,) for n in shape)), dtype=np.float32,
                    meta=np.empty((0,) * (1 + len(shape)), np.float32))


def _spectrogram_block(md5: str, path: str, time: np.ndarray, n_inside: int, params: dict,
                       cache_dir: str | os.PathLike | None) -> np.ndarray:
    """Dask task: ``(1, n_mels, time)`` of one stimulus, NaN from bin ``n_inside`` on or without ``path``."""
    out = np.full((1, params["n_mels"], time.size), np.nan, np.float32)
    if path:
        out[0, :, :n_inside] = _spectrogram(md5, path, time[:n_inside], params, cache_dir)
    return out


def _spectrogram(md5: str, path: str, time: np.ndarray, params: dict,
                 cache_dir: str | os.PathLike | None) -> np.ndarray:
    """One stimulus's mel spectrogram on ``time``, through the cache when there is one."""
    cached = _cache_file(Path(cache_dir), md5, path, time, params) if cache_dir is not None else None
    if cached is not None and cached.is_file():
        return np.load(cached)
    wave, fs = _read_sound(path)
    spec, _ = mel_spectrogram(wave, fs, time, params["dt"], window_ms=params["window_ms"],
                              n_mels=params["n_mels"], fmin=params["fmin"], fmax=params["fmax"],
                              compression=params["compression"])
    if cached is not None:
        with atomic_write(cached) as tmp, open(tmp, "wb") as f:
            np.save(f, spec)
    return spec


def resample(wave: np.ndarray, fs: float, audio_fs: float) -> np.ndarray:
    """Resample ``wave`` from ``fs`` to ``audio_fs`` with scipy's polyphase filter.

    The rate ratio is approximated by a fraction with denominator <= 10000
    (exact for integer rates such as 24414 -> 24000 = 4000/4069).

    Examples
    --------
    >>> resample(np.ones(4069), 24414.0, 24000.0).shape
    (4000,)
    """
    ratio = Fraction(audio_fs / fs).limit_denominator(10_000)
    if ratio == 1:
        return np.asarray(wave, float).copy()
    return scipy.signal.resample_poly(wave, ratio.numerator, ratio.denominator)


def stimulus_waveforms(sounds: pd.DataFrame, *, audio_fs: float = 24000.0) -> xr.Dataset:
    """Every stimulus's sound resampled to ``audio_fs``, from onset.

    Sample ``j`` is at ``sample_time = j / audio_fs``; it is NaN from the
    stimulus's end (``sample_time >= duration``) on, 0 where the file ends
    before its duration; a stimulus whose sound is missing or unreadable is
    all NaN. Lazy: one dask task per stimulus.

    Parameters
    ----------
    sounds : DataFrame
        :func:`locate_sounds`'s table.
    audio_fs : float
        Output sample rate in Hz.

    Returns
    -------
    xarray.Dataset
        ``waveform (stim, sample)`` float32 (full scale, a dask array chunked
        by stimulus) with coordinate
        ``sample_time (sample)`` in seconds.

    Examples
    --------
    >>> ds = stimulus_waveforms(locate_sounds(sources, durations))  # doctest: +SKIP
    >>> ds.waveform.isel(stim=0).plot(x="sample_time")              # doctest: +SKIP
    """
    if not audio_fs > 0:
        raise ValueError(f"audio_fs={audio_fs!r}: expected a positive rate in Hz")
    durations = sounds["duration"].to_numpy(float)
    n_samples = int(np.ceil(np.max(durations, initial=0.0) * audio_fs))
    sample_time = np.arange(n_samples) / audio_fs
    n_inside = np.searchsorted(sample_time, durations)  # samples before the stimulus's end
    blocks = [(_waveform_block, path, n_samples, int(n), float(audio_fs))
              for path, n in zip(_usable_paths(sounds), n_inside)]
    return xr.Dataset(
        {"waveform": (("stim", "sample"), _per_stimulus("waveform", blocks, (n_samples,), {}),
                      {"long_name": "stimulus sound pressure (full scale)", "units": "1",
                       "audio_fs": float(audio_fs)})},
        coords={"stim": sounds.index.to_numpy(object),
                "sample_time": ("sample", sample_time, {"long_name": "time from stimulus onset", "units": "s"})},
    )


def _waveform_block(path: str, n_samples: int, n_inside: int, audio_fs: float) -> np.ndarray:
    """Dask task: ``(1, n_samples)`` of one stimulus: its sound, 0 after the file's end, NaN from ``n_inside`` on."""
    out = np.full((1, n_samples), np.nan, np.float32)
    if path:
        wave, fs = _read_sound(path)
        resampled = resample(wave, fs, audio_fs)[:n_inside]
        out[0, :n_inside] = 0.0
        out[0, :resampled.size] = resampled
    return out
