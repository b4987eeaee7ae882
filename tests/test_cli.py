"""The aa4xr command."""

import shutil

import h5py

from aa4xr.cli import main


def test_info_reports_what_is_left_out(corpus, tmp_path, capsys):
    root = tmp_path / "root"
    shutil.copytree(corpus.root, root)
    bad = sorted(root.glob("*/*.h5"))[0]
    with h5py.File(bad, "r+") as f:
        del f.attrs["electrode"]
    written = corpus.stim_files[corpus.stim_files["wav_written"]]
    written = written[~written["md5"].duplicated(keep=False)]  # a sound no other animal holds
    wav = root / written.iloc[0]["animal"] / "wavfiles" / f"stim{written.iloc[0]['number']}.wav"
    wav.write_bytes(wav.read_bytes() + b"\0\0")  # its md5 no longer matches stim_md5
    assert main(["info", str(root)]) == 0
    out = capsys.readouterr().out
    for animal in corpus.units["animal"].unique():
        assert animal in out
    assert bad.name in out and "unreadable unit files: 1" in out
    dropped = corpus.units[~corpus.units["sort_type"].isin(["single", "multi"])]
    dropped = dropped[dropped["neuron"] != f"{bad.parent.name}/{bad.stem}"]
    for sort_type, n in dropped.groupby("sort_type").size().items():
        assert f"{sort_type} {n}" in out
    kept = corpus.units["sort_type"].isin(["single", "multi"]) & (corpus.units["neuron"] != f"{bad.parent.name}/{bad.stem}")
    assert f"kept {kept.sum()}" in out
    assert "sound files whose md5 differs from stim_md5: 1" in out and wav.name in out
    missing = corpus.stims[corpus.stims["wav_missing_everywhere"]]["md5"]
    assert f"stimuli without a sound file: {len(missing)}" in out and all(m in out for m in missing)


def test_info_on_the_sample_and_errors(capsys, tmp_path):
    assert main(["info"]) == 0
    assert "coverage" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["info", "--sort-types", "single,bogus"]) == 2
    assert "bogus" in capsys.readouterr().err


def test_inspect_writes_the_three_figures_and_prints_where(corpus, tmp_path, capsys):
    from pathlib import Path

    from aa4xr.plot import FIGURE_NAMES

    assert main(["inspect", str(corpus.root), "--out", str(tmp_path / "figs")]) == 0
    printed = [Path(line) for line in capsys.readouterr().out.splitlines()]
    assert [p.name for p in printed] == list(FIGURE_NAMES)
    assert all(p.parent == tmp_path / "figs" and p.read_bytes()[:4] == b"\x89PNG" for p in printed)
    assert main(["inspect", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
