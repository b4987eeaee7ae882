"""fetch_aa4 against a local stand-in for crcns.org (tests/crcns_server.py): never the internet."""

from __future__ import annotations

import collections
import hashlib
import io
import logging
import random
import tarfile
import traceback
from pathlib import Path
from urllib.parse import quote, quote_plus

import pooch
import pytest

from aa4xr import fetch
from aa4xr.fetch import (
    ANIMALS, MARKER, CorruptArchiveError, CRCNSDownloader, CredentialsError, DiskSpaceError,
    DownloadError, FetchError, LoginError, MissingFileError, UnknownAnimalError,
    UnsafeArchiveError, extract_archive, fetch_aa4, parse_filelist,
)
from crcns_server import FakeCRCNS

USERNAME = "finch.fan@example.org"
PASSWORD = "pä$$ w0rd&=%;"  # characters that form encoding must carry intact


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """The tree the archives are made of: the synthetic sample corpus when it exists."""
    root = tmp_path_factory.mktemp("source")
    try:
        from aa4xr.synthetic import write_corpus
    except ImportError:  # the synthetic writer has not landed yet: a tree of the same shape
        noise = random.Random(0)
        for animal in ANIMALS[:2]:
            (root / animal / "wavfiles").mkdir(parents=True)
            (root / animal / "Site1_L1400R1400_e10_s0_ss1.h5").write_bytes(noise.randbytes(60_000))
            (root / animal / "wavfiles" / "stim1.wav").write_bytes(b"RIFF" + noise.randbytes(30_000))
    else:
        write_corpus(root, "sample", seed=0, processes=1)
    return root


@pytest.fixture(scope="module")
def animals(source) -> list[str]:
    found = [a for a in ANIMALS if (source / a).is_dir()][:2]
    assert found, "the source tree holds no AA4 animal"
    return found


@pytest.fixture(scope="module")
def archives(source, animals) -> dict[str, bytes]:
    return {f"{animal}.tar.gz": make_archive(source, animal) for animal in animals}


@pytest.fixture
def crcns(archives):
    with FakeCRCNS(USERNAME, PASSWORD, files=dict(archives)) as server:
        yield server


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    """Small chunks (so that a cut body has been partly written) and no wait between retries."""
    monkeypatch.setattr(fetch, "CHUNK_SIZE", 4096)
    monkeypatch.setattr(fetch, "RETRY_WAIT", 0.0)
    for name in ("CRCNS_USERNAME", "CRCNS_PASSWORD", "AA4XR_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)


def make_archive(source: Path, animal: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(source / animal, arcname=animal)
    return buffer.getvalue()


def run(crcns: FakeCRCNS, path: Path, animals, **kwargs) -> Path:
    options = {"username": USERNAME, "password": PASSWORD, "progressbar": False,
               "login_url": crcns.login_url, "download_url": crcns.download_url}
    return fetch_aa4(animals, path, **{**options, **kwargs})


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_unpacked(root: Path, source: Path, animal: str) -> None:
    assert tree(root / animal) == {**tree(source / animal), MARKER: (root / animal / MARKER).read_bytes()}


def assert_clean(root: Path) -> None:
    """Nothing but the unpacked animal folders is left in ``root``."""
    assert all(p.is_dir() and (p / MARKER).is_file() for p in root.iterdir()), sorted(root.iterdir())


# -- the happy path ------------------------------------------------------------------------------


def test_fetch_downloads_unpacks_and_cleans_up(crcns, source, animals, archives, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="aa4xr")
    root = run(crcns, tmp_path / "data", animals)
    assert root == (tmp_path / "data").resolve()
    for animal in animals:
        assert_unpacked(root, source, animal)
        data = archives[f"{animal}.tar.gz"]
        assert (root / animal / MARKER).read_text().count(hashlib.sha256(data).hexdigest()) == 1
        assert f"SHA-256 of {animal}.tar.gz: {hashlib.sha256(data).hexdigest()}" in caplog.text
    assert_clean(root)
    assert [r.method for r in crcns.requests if r.path == "/login_form"] == ["POST"]


def test_second_call_makes_no_request_and_needs_no_credentials(crcns, animals, tmp_path):
    run(crcns, tmp_path, animals)
    crcns.requests.clear()
    assert fetch_aa4(animals, tmp_path, progressbar=False) == tmp_path.resolve()
    assert crcns.requests == []


def test_only_missing_animals_are_downloaded(crcns, animals, tmp_path):
    run(crcns, tmp_path, animals[0])
    crcns.requests.clear()
    run(crcns, tmp_path, animals)
    assert crcns.file_requests(f"{animals[0]}.tar.gz") == []
    assert len(crcns.file_requests(f"{animals[1]}.tar.gz")) == 1


def test_credentials_and_folder_from_the_environment(crcns, source, animals, tmp_path, monkeypatch):
    monkeypatch.setenv("CRCNS_USERNAME", USERNAME)
    monkeypatch.setenv("CRCNS_PASSWORD", PASSWORD)
    monkeypatch.setenv("AA4XR_DATA_DIR", str(tmp_path / "env"))
    root = fetch_aa4(animals[0], login_url=crcns.login_url, download_url=crcns.download_url,
                     progressbar=False)
    assert root == (tmp_path / "env").resolve()
    assert_unpacked(root, source, animals[0])


def test_open_aa4_opens_the_fetched_root(crcns, animals, tmp_path):
    pytest.importorskip("aa4xr.synthetic", reason="real unit files come from the synthetic writer")
    import aa4xr

    ds = aa4xr.open_aa4(run(crcns, tmp_path, animals))
    assert set(ds.animal.values) == set(animals)


def test_downloader_checks_availability_for_pooch(crcns, animals, tmp_path):
    archives = pooch.create(path=tmp_path, base_url=f"{crcns.download_url}/aa-4/",
                            registry={f"{animals[0]}.tar.gz": None, "absent.tar.gz": None})
    downloader = CRCNSDownloader(USERNAME, PASSWORD, login_url=crcns.login_url)
    assert archives.is_available(f"{animals[0]}.tar.gz", downloader=downloader)
    assert not archives.is_available("absent.tar.gz", downloader=downloader)


# -- resuming ------------------------------------------------------------------------------------


def test_cut_download_resumes_in_the_same_call(crcns, source, animals, tmp_path):
    crcns.cuts = 1
    root = run(crcns, tmp_path, animals[0])
    first, second = crcns.file_requests(f"{animals[0]}.tar.gz")
    assert first.range is None
    assert second.range.startswith("bytes=") and second.range != "bytes=0-"
    assert_unpacked(root, source, animals[0])


def test_cut_download_resumes_in_the_next_call(crcns, source, animals, archives, tmp_path):
    name = f"{animals[0]}.tar.gz"
    crcns.cuts = 100
    with pytest.raises(DownloadError, match="run again to resume") as error:
        run(crcns, tmp_path, animals[0])
    assert "broke off 4 times" in str(error.value)
    part = tmp_path / f"{name}.part"
    kept = part.stat().st_size
    assert 0 < kept < len(archives[name])
    assert archives[name].startswith(part.read_bytes())
    crcns.cuts = 0
    crcns.requests.clear()
    run(crcns, tmp_path, animals[0])
    assert [r.range for r in crcns.file_requests(name)] == [f"bytes={kept}-"]
    assert_unpacked(tmp_path, source, animals[0])
    assert_clean(tmp_path)


def test_server_ignoring_range_sends_the_whole_file_again(crcns, source, animals, archives, tmp_path):
    name = f"{animals[0]}.tar.gz"
    (tmp_path / f"{name}.part").write_bytes(archives[name][:1000])
    crcns.honour_range = False
    run(crcns, tmp_path, animals[0])
    assert [r.range for r in crcns.file_requests(name)] == ["bytes=1000-"]
    assert_unpacked(tmp_path, source, animals[0])


def test_part_longer_than_the_file_is_downloaded_anew(crcns, source, animals, archives, tmp_path, caplog):
    name = f"{animals[0]}.tar.gz"
    crcns.filelist = ""  # no size to compare with: the server's 416 tells
    (tmp_path / f"{name}.part").write_bytes(archives[name] + b"junk")
    run(crcns, tmp_path, animals[0])
    assert [r.range for r in crcns.file_requests(name)] == [f"bytes={len(archives[name]) + 4}-", None]
    assert "filelist.txt lists no file" in caplog.text
    assert_unpacked(tmp_path, source, animals[0])


# -- errors --------------------------------------------------------------------------------------


def test_unknown_animal_lists_the_valid_ones(crcns, tmp_path):
    with pytest.raises(UnknownAnimalError, match="Zebra01") as error:
        run(crcns, tmp_path, ["LblBlu2028M", "Zebra01"])
    assert isinstance(error.value, ValueError)
    assert all(animal in str(error.value) for animal in ANIMALS)
    assert crcns.requests == []


@pytest.mark.parametrize("given", [{}, {"username": USERNAME}, {"password": PASSWORD}])
def test_missing_credentials(crcns, animals, tmp_path, given):
    with pytest.raises(CredentialsError, match="CRCNS_PASSWORD") as error:
        fetch_aa4(animals[0], tmp_path, login_url=crcns.login_url, download_url=crcns.download_url, **given)
    missing = [what for what in ("username", "password") if what not in given]
    assert f"but the {' and '.join(missing)} " in str(error.value)
    assert crcns.requests == []


def test_rejected_login(crcns, animals, tmp_path):
    with pytest.raises(LoginError, match="rejected the login"):
        run(crcns, tmp_path, animals[0], password="wrong")
    assert crcns.file_requests(f"{animals[0]}.tar.gz") == []


def test_file_missing_from_the_file_list(crcns, animals, tmp_path):
    del crcns.files[f"{animals[0]}.tar.gz"]
    with pytest.raises(MissingFileError, match=f"holds no {animals[0]}.tar.gz"):
        run(crcns, tmp_path, animals)
    assert crcns.file_requests(f"{animals[0]}.tar.gz") == []
    assert crcns.file_requests(f"{animals[1]}.tar.gz") == []


def test_file_missing_answered_with_an_html_page(crcns, animals, archives, tmp_path):
    name = f"{animals[0]}.tar.gz"
    crcns.filelist = f"aa-4/{name} {len(archives[name])}\n"
    del crcns.files[name]
    with pytest.raises(MissingFileError, match="HTML page"):
        run(crcns, tmp_path, animals[0])
    assert list(tmp_path.iterdir()) == []


def test_html_page_without_html_content_type(crcns, animals, tmp_path):
    crcns.filelist, crcns.content_type = "", "application/octet-stream"
    crcns.files[f"{animals[0]}.tar.gz"] = b"<!DOCTYPE html><html>Not found</html>"
    with pytest.raises(MissingFileError, match="HTML page"):
        run(crcns, tmp_path, animals[0])


def test_truncated_download_is_refused_and_removed(crcns, animals, archives, tmp_path):
    name = f"{animals[0]}.tar.gz"
    crcns.filelist = f"aa-4/{name} {len(archives[name])}\n"
    crcns.files[name] = archives[name][:-100]
    with pytest.raises(CorruptArchiveError, match=f"received {len(archives[name]) - 100} bytes"):
        run(crcns, tmp_path, animals[0])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncated", "flipped", "not gzip"])
def test_corrupt_archive_is_refused_and_removed(crcns, animals, archives, tmp_path, damage):
    name = f"{animals[0]}.tar.gz"
    data = archives[name]
    crcns.filelist = ""  # no size to check: the gzip stream itself must tell
    crcns.files[name] = {
        "truncated": data[: len(data) // 2],
        "flipped": data[:200] + bytes(b ^ 0xFF for b in data[200:400]) + data[400:],
        "not gzip": b"PK\x03\x04" + data[4:],
    }[damage]
    with pytest.raises(CorruptArchiveError, match=name):
        run(crcns, tmp_path, animals[0])
    assert list(tmp_path.iterdir()) == []


def test_sha256_from_the_registry_is_checked(crcns, source, animals, archives, tmp_path, monkeypatch):
    name = f"{animals[0]}.tar.gz"
    registry = tmp_path / "registry.txt"
    monkeypatch.setattr(fetch, "REGISTRY_FILE", registry)
    registry.write_text(f"# known hashes\n{name} {'0' * 64}\n")
    with pytest.raises(CorruptArchiveError, match="SHA256"):
        run(crcns, tmp_path / "bad", animals[0])
    assert list((tmp_path / "bad").iterdir()) == []
    registry.write_text(f"{name} {hashlib.sha256(archives[name]).hexdigest()}\n")
    assert_unpacked(run(crcns, tmp_path / "good", animals[0]), source, animals[0])


def fake_disk_usage(*free: int):
    """A shutil.disk_usage whose successive calls report ``free`` bytes (the last one repeats)."""
    answers = list(free)
    usage = collections.namedtuple("usage", "total used free")

    def disk_usage(path):
        return usage(2**40, 0, answers.pop(0) if len(answers) > 1 else answers[0])

    return disk_usage


def test_no_disk_space_for_the_download(crcns, animals, tmp_path, monkeypatch):
    monkeypatch.setattr(fetch.shutil, "disk_usage", fake_disk_usage(999))
    with pytest.raises(DiskSpaceError, match=f"downloading {animals[0]}.tar.gz needs .* 999 B free"):
        run(crcns, tmp_path, animals[0])
    assert crcns.file_requests(f"{animals[0]}.tar.gz") == []


def test_no_disk_space_to_unpack_keeps_the_archive(crcns, source, animals, tmp_path, monkeypatch):
    name = f"{animals[0]}.tar.gz"
    with monkeypatch.context() as patch:
        patch.setattr(fetch.shutil, "disk_usage", fake_disk_usage(2**40, 1000))
        with pytest.raises(DiskSpaceError, match=f"unpacking {name}"):
            run(crcns, tmp_path, animals[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    crcns.requests.clear()
    run(crcns, tmp_path, animals[0])
    assert crcns.file_requests(name) == []
    assert_unpacked(tmp_path, source, animals[0])


def test_existing_folder_not_made_by_fetch_is_left_alone(crcns, animals, tmp_path):
    (tmp_path / animals[0]).mkdir()
    with pytest.raises(FetchError, match="not unpacked by fetch_aa4"):
        run(crcns, tmp_path, animals[0])
    assert crcns.requests == []


# -- unsafe archives -----------------------------------------------------------------------------


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def evil_archive(animal: str, evil: tarfile.TarInfo) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(member(animal, tarfile.DIRTYPE))
        good = member(f"{animal}/Site1_e1_s0.h5")
        good.size = 2
        tar.addfile(good, io.BytesIO(b"ok"))
        evil.size = 4 if evil.isfile() else 0
        tar.addfile(evil, io.BytesIO(b"evil") if evil.isfile() else None)
    return buffer.getvalue()


@pytest.mark.parametrize("name, kind, linkname, reason", [
    ("{animal}/../../escaped.txt", tarfile.REGTYPE, "", "'..'"),
    ("/tmp/aa4xr-test-absolute.txt", tarfile.REGTYPE, "", "absolute"),
    ("{animal}/link.h5", tarfile.SYMTYPE, "/etc/passwd", "link"),
    ("{animal}/hard.h5", tarfile.LNKTYPE, "../../outside", "link"),
    ("{animal}/device", tarfile.CHRTYPE, "", "device"),
])
def test_unsafe_archive_is_refused(crcns, animals, tmp_path, name, kind, linkname, reason):
    animal = animals[0]
    evil = member(name.format(animal=animal), kind, linkname)
    crcns.filelist = ""
    crcns.files[f"{animal}.tar.gz"] = evil_archive(animal, evil)
    root = tmp_path / "a" / "b"
    with pytest.raises(UnsafeArchiveError, match=reason) as error:
        run(crcns, root, animal)
    assert repr(evil.name) in str(error.value)
    assert list(root.iterdir()) == []
    assert not (tmp_path / "escaped.txt").exists()
    assert not Path("/tmp/aa4xr-test-absolute.txt").exists()


def test_archive_without_its_animal_folder(tmp_path):
    archive = tmp_path / "LblBlu2028M.tar.gz"
    archive.write_bytes(evil_archive("Other", member("Other/x.h5")))
    with pytest.raises(CorruptArchiveError, match="does not unpack to LblBlu2028M/"):
        extract_archive(archive, tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []


# -- credentials never leak ----------------------------------------------------------------------


def test_credentials_never_appear_in_errors_logs_output_or_files(crcns, animals, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    pooch_logs = io.StringIO()
    handler = logging.StreamHandler(pooch_logs)
    pooch.get_logger().addHandler(handler)
    errors = []
    try:
        for password, cuts in [("wrong-" + PASSWORD, 0), (PASSWORD, 100), (PASSWORD, 0)]:
            crcns.cuts = cuts
            try:
                run(crcns, tmp_path, animals[0], password=password, progressbar=True)
            except FetchError as error:
                errors.append(error)
        with pytest.raises(FetchError) as missing:
            run(crcns, tmp_path, [a for a in ANIMALS if a not in animals][0], password=PASSWORD)
        errors.append(missing.value)
    finally:
        pooch.get_logger().removeHandler(handler)
    assert [type(e) for e in errors] == [LoginError, DownloadError, MissingFileError]
    texts = ["".join(traceback.format_exception(e)) + repr(e) for e in errors]
    texts += [r.getMessage() for r in caplog.records] + [pooch_logs.getvalue(), *capfd.readouterr()]
    texts += [p.read_bytes().decode("utf-8", "replace") for p in tmp_path.rglob("*") if p.is_file()]
    texts.append(repr(CRCNSDownloader(USERNAME, PASSWORD)))
    assert texts
    for secret in (PASSWORD, quote(PASSWORD), quote_plus(PASSWORD), USERNAME):
        assert not [t for t in texts if secret in t], secret


# -- the file list -------------------------------------------------------------------------------


def test_parse_filelist_reads_common_layouts():
    text = (
        "# CRCNS aa-4 file list\n"
        "path size\n"
        "aa-4/BlaBro09xxF.tar.gz 123456\n"
        "654321\taa-4/GreBlu9508M.tar.gz\n"
        "\"./LblBlu2028M.tar.gz\",42\n"
        "\n"
        "-rw-r--r-- 1 crcns crcns 99 Jan  1  2019 WhiBlu5396M.tar.gz\n"
    )
    assert parse_filelist(text) == {"BlaBro09xxF.tar.gz": 123456, "GreBlu9508M.tar.gz": 654321,
                                    "LblBlu2028M.tar.gz": 42}
