"""Attribute decoding and file-name parsing, every encoding variant."""

import numpy as np
import pytest

from aa4xr.layout import decode_attr, parse_unit_name


@pytest.mark.parametrize("raw,expected", [
    ("Call1", "Call1"), (b"Call1", "Call1"), (np.bytes_(b"Call1"), "Call1"),
    (np.array([b"Call1"]), "Call1"), (np.array([[b"Call1"]]), "Call1"),
    ("None", None), (b"None", None), (np.array([b"None"]), None),
    (np.int64(3), 3), (np.float64(3.0), 3.0), (np.array([2.5]), 2.5), (7, 7),
])
def test_decode_attr(raw, expected):
    got = decode_attr(raw)
    assert got == expected and type(got) is type(expected)


def test_parse_unit_name_variants():
    full = parse_unit_name("Site3_L1400R1250_e17_s1_ss2")
    assert full == {"site": "Site3", "ldepth": 1400.0, "rdepth": 1250.0, "electrode": 17,
                    "sort_id": 1, "subsort_id": 2.0}
    left_only = parse_unit_name("Site1_L900_e4_s0")
    assert left_only["ldepth"] == 900.0 and np.isnan(left_only["rdepth"]) and np.isnan(left_only["subsort_id"])
    right_only = parse_unit_name("Site1_R900_e20_s0")
    assert np.isnan(right_only["ldepth"]) and right_only["rdepth"] == 900.0
    with pytest.raises(ValueError, match="Unit7"):
        parse_unit_name("Unit7")


def test_sound_found_by_tdt_wavfile_before_group_number(corpus, tmp_path):
    """The lab finds a sound by the file name in tdt_wavfile; the group number comes second."""
    import hashlib
    import shutil
    import warnings

    import h5py

    import aa4xr
    from aa4xr.layout import wav_file_name

    animal = "LblBlu2028M"
    root = tmp_path / "root"
    shutil.copytree(corpus.root / animal, root / animal)
    files = corpus.stim_files[(corpus.stim_files["animal"] == animal) & corpus.stim_files["wav_written"]]
    target, decoy = files.iloc[0], files.iloc[1]
    wavs = root / animal / "wavfiles"
    (wavs / f"stim{target['number']}.wav").rename(wavs / "renamed_by_the_lab.wav")
    shutil.copy(wavs / f"stim{decoy['number']}.wav", wavs / f"stim{target['number']}.wav")  # wrong sound
    for unit in root.glob(f"{animal}/Site*.h5"):
        with h5py.File(unit, "r+") as f:
            for protocol in (p for p in f if p.startswith("Call")):
                group = f[protocol].get(str(target["number"]))
                if group is not None:
                    group.attrs["tdt_wavfile"] = "/auto/fdata/stims/Stims/renamed_by_the_lab.wav"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = aa4xr.open_aa4(root, sort_types=None, processes=1)
    got = ds.sel(stim=target["md5"])
    assert str(got["wav_path"].values) == str(wavs / "renamed_by_the_lab.wav")
    assert str(got["wav_status"].values) == "ok"
    assert hashlib.md5((wavs / "renamed_by_the_lab.wav").read_bytes()).hexdigest() == target["md5"]
    assert wav_file_name("/auto/fdata/stims/Stims/renamed_by_the_lab.wav") == "renamed_by_the_lab.wav"
