"""Issue 11's faults in sounds, sizes, arguments and downloads: each gets its exact outcome.

Sound faults are injected into a copy of the synthetic sample corpus; the
responses are checked against the writer's ground truth. Permission faults
run in a child process without the capabilities that let root read any file
(``CAP_DAC_OVERRIDE``, ``CAP_DAC_READ_SEARCH``), so they hold as root too.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import tracemalloc
import traceback
import warnings
from pathlib import Path
from urllib.parse import quote, quote_plus

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import aa4xr
from aa4xr.fetch import CRCNSDownloader, DownloadError, fetch_aa4
from aa4xr.stimuli import locate_sounds
from crcns_server import FakeCRCNS


def _data_start(wav: bytes) -> int:
    """Offset of the first sample of a canonical PCM wav (after the ``data`` chunk header)."""
    return wav.index(b"data") + 8


def _replace(path: Path, make) -> None:
    path.unlink()
    make(path)


#: Fault name -> (how to damage a wav in place, what the reason must say).
SOUND_FAULTS = {
    "empty": (lambda p: p.write_bytes(b""), "empty (0 bytes)"),
    "truncated header": (lambda p: p.write_bytes(p.read_bytes()[:30]), "not a readable wav"),
    "not a wav": (lambda p: p.write_text("stimulus notes, not a sound\n" * 20), "not a readable wav"),
    "no samples": (lambda p: p.write_bytes(p.read_bytes()[:_data_start(p.read_bytes())]), "no samples"),
    "a folder": (lambda p: _replace(p, Path.mkdir), "not a regular file (a folder)"),
    "broken link": (lambda p: _replace(p, lambda q: q.symlink_to(q.with_name("gone.wav"))),
                    "a broken symbolic link to"),
}


# -- sounds: a damaged wav costs its spectrogram only, with a warning saying why -------------------


@pytest.fixture(scope="module")
def damaged(corpus, tmp_path_factory):
    """A copy of the sample corpus with every copy of one stimulus's wav damaged per fault, opened."""
    root = tmp_path_factory.mktemp("damaged") / "root"
    shutil.copytree(corpus.root, root, symlinks=True)
    files = corpus.stim_files[corpus.stim_files["wav_written"]]
    md5s = sorted(files["md5"].unique())
    assert len(md5s) > len(SOUND_FAULTS), "the sample holds too few sounds for this test"
    faults = {}
    for (name, (damage, _)), md5 in zip(SOUND_FAULTS.items(), md5s):
        paths = [root / Path(p).relative_to(corpus.root) for p in files.loc[files["md5"] == md5, "wav_path"]]
        for path in paths:
            damage(path)
        faults[name] = (md5, [str(p) for p in paths])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = aa4xr.open_aa4(root, sort_types=None, waveform=True)  # errors="raise": it must not raise
    intact = [m for m in md5s if m not in {md5 for md5, _ in faults.values()}]
    return ds, faults, caught, intact


def expected_counts(gt, ds, md5: str) -> np.ndarray:
    """``spike_count`` of one stimulus ``(neuron, trial, time)`` from the ground truth (pre = post = 0)."""
    dt = float(ds.attrs["dt"])
    _, n_neuron, n_trial, n_time = ds.spike_count.shape
    out = np.full((n_neuron, n_trial, n_time), np.nan)
    neuron = {n: i for i, n in enumerate(ds.neuron.values)}
    duration = float(gt.stims.set_index("md5").loc[md5, "duration"])
    edges = np.arange(n_time + 1) * dt
    for i in np.flatnonzero(gt.trials["md5"].to_numpy() == md5):
        row = gt.trials.iloc[i]
        k = np.searchsorted(edges, gt.trial_spikes(i), side="right") - 1
        counts = np.bincount(k[(k >= 0) & (k < n_time)], minlength=n_time).astype(float)
        t = edges[:-1]
        counts[~((t < duration) & (t + dt > -row.pre_time) & (t <= duration + row.post_time))] = np.nan
        out[neuron[row.neuron], row.order] = counts
    return out


@pytest.mark.parametrize("fault", SOUND_FAULTS)
def test_damaged_wav_warns_naming_the_file_and_why(damaged, fault):
    _, faults, caught, _ = damaged
    md5, paths = faults[fault]
    about = [w for w in caught if md5 in str(w.message)]
    assert len(about) == 1, [str(w.message) for w in about]  # no misleading md5 warning first
    message = str(about[0].message)
    assert paths[0] in message and SOUND_FAULTS[fault][1] in message and "md5 of the file" not in message
    assert about[0].filename == __file__  # the warning points at the user's line, not aa4xr's


@pytest.mark.parametrize("fault", SOUND_FAULTS)
def test_damaged_wav_gives_nan_sound_and_a_recorded_status(damaged, fault):
    ds, faults, _, _ = damaged
    md5, paths = faults[fault]
    one = ds.sel(stim=md5)
    assert str(one.wav_status.values) == "unreadable" and str(one.wav_path.values) == paths[0]
    assert SOUND_FAULTS[fault][1] in str(one.wav_reason.values)
    assert np.isnan(one.spectrogram.values).all() and np.isnan(one.waveform.values).all()


@pytest.mark.parametrize("fault", SOUND_FAULTS)
def test_damaged_wav_costs_no_response(damaged, corpus, fault):
    ds, faults, _, _ = damaged
    md5, _ = faults[fault]
    assert int(ds.n_trials.sel(stim=md5).sum()) == int((corpus.trials["md5"] == md5).sum()) > 0
    np.testing.assert_array_equal(ds.spike_count.sel(stim=md5).values, expected_counts(corpus, ds, md5))


def test_intact_sounds_beside_damaged_ones_are_used(damaged, corpus):
    ds, _, _, intact = damaged
    assert intact
    for md5 in intact:
        one = ds.sel(stim=md5)
        inside = ds.time.values < float(corpus.stims.set_index("md5").loc[md5, "duration"])
        assert str(one.wav_status.values) == "ok" and str(one.wav_reason.values) == ""
        spectrogram = one.spectrogram.values
        assert np.isfinite(spectrogram[:, inside]).all() and spectrogram[:, inside].max() > 0
        assert np.isnan(spectrogram[:, ~inside]).all()


def test_wavfiles_that_is_not_a_folder_is_named(tmp_path):
    (tmp_path / "A").mkdir()
    (tmp_path / "A" / "wavfiles").write_text("not a folder")
    path = str(tmp_path / "A" / "wavfiles" / "stim1.wav")
    sources = pd.DataFrame({"md5": ["ab"], "animal": ["A"], "number": [1], "path": [path]})
    with pytest.warns(UserWarning, match="cannot be read") as caught:
        sounds = locate_sounds(sources, pd.Series({"ab": 1.0}))
    assert str(tmp_path / "A" / "wavfiles") in str(caught[0].message)
    assert "no sound file" not in str(caught[0].message) and caught[0].filename == __file__
    assert sounds.loc["ab", "status"] == "unreadable"
    assert sounds.loc["ab", "reason"] == f"its folder {tmp_path / 'A' / 'wavfiles'} cannot be read (Not a directory)"


# -- permissions: checked by a process that the file modes bind, even when run as root ------------


def _drop_file_capabilities() -> None:
    """In the child before exec: drop from the bounding set what lets root ignore file modes."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


LOCATE = textwrap.dedent("""
    import json, sys, warnings
    import pandas as pd
    from aa4xr.stimuli import locate_sounds
    rows, durations = json.loads(sys.argv[1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sounds = locate_sounds(pd.DataFrame(rows), pd.Series(durations))
    print(json.dumps({"sounds": sounds.reset_index().to_dict("records"),
                      "warnings": [str(w.message) for w in caught]}))
""")


def locate_bound_by_file_modes(rows: list[dict], durations: dict) -> dict:
    """``locate_sounds`` in a child process that file modes bind (see the module's docstring)."""
    done = subprocess.run([sys.executable, "-c", LOCATE, json.dumps([rows, durations])], text=True,
                          capture_output=True, preexec_fn=_drop_file_capabilities if os.geteuid() == 0 else None)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _tone_wav(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, 0.5 * np.sin(np.arange(2441) / 3.0), 24414, subtype="PCM_16")
    return str(path)


@pytest.fixture
def locked(tmp_path):
    """Paths to chmod 000 during a test; their modes are restored afterwards (for tmp_path's cleanup)."""
    paths = []
    yield paths
    for path in paths:
        path.chmod(0o755)


def test_wav_without_read_permission(tmp_path, locked):
    path = _tone_wav(tmp_path / "A" / "wavfiles" / "stim1.wav")
    Path(path).chmod(0)
    locked.append(Path(path))
    out = locate_bound_by_file_modes([{"md5": "ab", "animal": "A", "number": 1, "path": path}], {"ab": 0.1})
    (sound,) = out["sounds"]
    assert (sound["status"], sound["path"], sound["reason"]) == ("unreadable", path, "Permission denied")
    assert out["warnings"] == [f"{path}: the sound of stimulus ab cannot be read: Permission denied; its "
                               "spectrogram and waveform are all NaN (its responses are kept)"]


def test_wavfiles_folder_without_permission_is_named(tmp_path, locked):
    folder = tmp_path / "A" / "wavfiles"
    path = _tone_wav(folder / "stim1.wav")
    folder.chmod(0)
    locked.append(folder)
    out = locate_bound_by_file_modes([{"md5": "ab", "animal": "A", "number": 1, "path": path}], {"ab": 0.1})
    (sound,) = out["sounds"]
    assert sound["status"] == "unreadable"
    assert sound["reason"] == f"its folder {folder} cannot be read (Permission denied)"
    (message,) = out["warnings"]
    assert str(folder) in message and "Permission denied" in message and "no sound file" not in message


# -- size: the stimulus variables stay lazy, whatever dt ------------------------------------------


def test_stimulus_variables_stay_lazy_at_a_fine_grid(corpus, no_compute, fresh_cache):
    dt = 1e-5
    with no_compute, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the sample's expected missing sound
        tracemalloc.start()
        try:
            ds = aa4xr.open_aa4(corpus.root, dt=dt, waveform=True)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 250e6  # about 60 MB; an eager spectrogram alone is 0.5 GB here, a dense spike_count 10 GB
    n_time = ds.sizes["time"]
    assert n_time >= corpus.stims["duration"].max() / dt
    for name, shape in (("spectrogram", (32, n_time)), ("waveform", (ds.sizes["sample"],))):
        data = ds[name].data
        assert isinstance(data, da.Array) and data.chunks == ((1,) * ds.sizes["stim"], *((n,) for n in shape))
    assert ds.spectrogram.nbytes > 100e6  # what an eager spectrogram would have allocated
    assert not (fresh_cache / "spectrograms").exists()  # nothing computed, nothing cached


# -- arguments: a clear error naming the argument and what is expected ------------------------------


@pytest.mark.parametrize("kwargs, error, message", [
    ({"animals": []}, ValueError, r"animals=\[\] selects nothing"),
    ({"sort_types": []}, ValueError, r"sort_types=\[\] selects nothing"),
    ({"stim_types": []}, ValueError, r"stim_types=\[\] selects nothing"),
    ({"chunk_mb": float("nan")}, ValueError, r"chunk_mb=nan: expected a finite number of megabytes > 0"),
    ({"chunk_mb": 0}, ValueError, r"chunk_mb=0: expected a finite number of megabytes > 0"),
    ({"chunk_mb": -1}, ValueError, r"chunk_mb=-1: expected a finite number of megabytes > 0"),
    ({"processes": 2.5}, TypeError, r"processes=2.5: expected a whole number >= 1"),
    ({"processes": "2"}, TypeError, r"processes='2': expected a whole number >= 1"),
    ({"processes": -1}, ValueError, r"processes=-1: expected a whole number >= 1"),
    ({"dt": "0.005"}, TypeError, r"dt='0.005': expected a number of seconds"),
    ({"dt": "5ms"}, TypeError, r"dt='5ms': expected a number of seconds"),
])
def test_wrong_argument_is_named(corpus, kwargs, error, message):
    with pytest.raises(error, match=message):
        aa4xr.open_aa4(corpus.root, **kwargs)


# -- download: no URL query (where a login name may sit) reaches an error or a log -----------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


USERNAME = "finch.fan@example.org"


@pytest.mark.parametrize("where", ["login redirect", "login url"])
def test_network_error_during_login_hides_url_queries(tmp_path, caplog, where):
    dead = f"http://127.0.0.1:{_closed_port()}"
    with FakeCRCNS(USERNAME, "secret") as server:
        login_url = server.login_url
        if where == "login redirect":
            server.login_redirect = f"{dead}/logged_in"
        else:
            login_url = f"{dead}/login_form?__ac_name={quote(USERNAME)}"
        with pytest.raises(DownloadError, match="logging in to crcns.org failed: ConnectionError") as raised:
            fetch_aa4("LblBlu2028M", tmp_path, username=USERNAME, password="secret", progressbar=False,
                      login_url=login_url, download_url=server.download_url)
    text = "".join(traceback.format_exception(raised.value)) + repr(raised.value)
    text += "".join(r.getMessage() for r in caplog.records)
    assert f"port={dead.rsplit(':', 1)[1]}" in text and ("url: /logged_in " if where == "login redirect"
                                                         else "url: /login_form ") in text
    for secret in (USERNAME, quote(USERNAME), quote_plus(USERNAME), "__ac_name"):
        assert secret not in text, secret
    assert "secret" not in repr(CRCNSDownloader(USERNAME, "secret"))


# -- messages: warnings point at the user's line --------------------------------------------------


def test_sound_warnings_point_at_the_callers_line_through_xarray(tmp_path):
    import xarray as xr

    root = tmp_path / "root"
    aa4xr.write_corpus(root, "sample", seed=0, processes=1)
    with pytest.warns(UserWarning) as caught:
        xr.open_dataset(root, engine="aa4")
    sounds = [w for w in caught if "sound" in str(w.message)]
    assert sounds and all(w.filename == __file__ for w in sounds), [(w.filename, str(w.message)) for w in caught]
