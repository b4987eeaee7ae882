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


def test_info_on_the_sample_and_errors(capsys, tmp_path):
    assert main(["info"]) == 0
    assert "coverage" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
