"""The aa4xr cache: where it is, what it holds, how to write into it and how to trim it.

Layout of the cache folder (:func:`cache_dir`)::

    stores/<animal>-<fingerprint>.nc      spike-time stores (aa4xr.store)
    spectrograms/<md5>-<key>.npy          one stimulus's spectrogram at one grid (aa4xr.stimuli)
    md5/<key>                             md5 digests of sound files
    sample-v<N>/                          the built-in synthetic sample corpus

Every file of it is written through :func:`atomic_write`: a reader never
sees half a file, and a shared cache stays readable by the group the umask
allows. Without a root, aa4xr opens :func:`default_root`, the sample.
``aa4xr cache info|clear|prune`` is the command-line face of this module.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

#: The cache's parts, in the order ``aa4xr cache info`` lists them.
KINDS = ("stores", "spectrograms", "md5", "sample")


def cache_dir() -> Path:
    """The cache folder: ``$AA4XR_CACHE_DIR`` or the platform's user cache dir.

    Examples
    --------
    >>> (cache_dir() / "stores").name  # where the spike-time stores go
    'stores'
    """
    env = os.environ.get("AA4XR_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("aa4xr"))


def sample_dir() -> Path:
    """Where :func:`aa4xr.sample_corpus` keeps the built-in sample (written or not)."""
    from .synthetic import SAMPLE_VERSION

    return cache_dir() / f"sample-v{SAMPLE_VERSION}"


def default_root() -> Path:
    """The root opened when none is given: the built-in sample corpus, written into the cache once."""
    from .synthetic import sample_corpus

    return sample_corpus()


@contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """Write ``path`` whole or not at all: the block writes the temporary file it is given.

    The temporary file lies beside ``path`` as ``.<name>.<host>.<pid>.<thread>.tmp``
    (see :func:`clean_stale_tmp`). When the block succeeds it gets the
    permissions the umask allows (a cache shared within a lab works) and is
    renamed over ``path``; when it fails it is removed.

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "digest"
    >>> with atomic_write(target) as tmp:
    ...     _ = tmp.write_text("d41d8cd9")
    >>> target.read_text(), sorted(p.name for p in target.parent.iterdir())
    ('d41d8cd9', ['digest'])
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def clean_stale_tmp(folder: Path) -> list[Path]:
    """Remove the temporary files of :func:`atomic_write` left by processes of this host that no longer run."""
    removed = []
    for tmp in folder.glob(f".*.{socket.gethostname()}.*.*.tmp"):
        pid = tmp.name.split(".")[-3]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Entry:
    """One item of the cache: a file, or a sample corpus folder."""

    kind: str
    path: Path
    bytes: int


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def entries(cache: Path | None = None) -> list[Entry]:
    """Everything the cache holds, by kind (see :data:`KINDS`), sorted by path.

    Examples
    --------
    >>> import tempfile
    >>> cache = Path(tempfile.mkdtemp())
    >>> (cache / "stores").mkdir(); _ = (cache / "stores" / "A-0123.nc").write_bytes(b"12345")
    >>> entries(cache)
    [Entry(kind='stores', path=PosixPath('.../stores/A-0123.nc'), bytes=5)]
    """
    cache = cache_dir() if cache is None else Path(cache)
    found = []
    for kind, pattern in (("stores", "stores/*.nc"), ("spectrograms", "spectrograms/*.npy"), ("md5", "md5/*")):
        found += [Entry(kind, p, p.stat().st_size) for p in sorted(cache.glob(pattern)) if p.is_file()]
    found += [Entry("sample", p, _size(p)) for p in sorted(cache.glob("sample-v*")) if p.is_dir()]
    return found


def format_size(n: float) -> str:
    """Bytes in a short human form.

    Examples
    --------
    >>> format_size(512), format_size(2_500_000)
    ('512 B', '2.4 MB')
    """
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_info(cache: Path | None = None) -> str:
    """What ``aa4xr cache info`` prints: the folder, then files and bytes per kind.

    Examples
    --------
    >>> import tempfile
    >>> print(format_info(Path(tempfile.mkdtemp())))  # doctest: +ELLIPSIS
    cache: ...
    stores              0 files       0 B
    spectrograms        0 files       0 B
    md5                 0 files       0 B
    sample              0 folders     0 B
    total                             0 B
    """
    cache = cache_dir() if cache is None else Path(cache)
    found = entries(cache)
    lines = [f"cache: {cache}"]
    for kind in KINDS:
        mine = [e for e in found if e.kind == kind]
        noun = "folders" if kind == "sample" else "files"
        lines.append(f"{kind:<14}{len(mine):>7} {noun:<8}{format_size(sum(e.bytes for e in mine)):>9}")
    lines.append(f"{'total':<30}{format_size(sum(e.bytes for e in found)):>9}")
    return "\n".join(lines)


def _remove(found: Iterable[Entry]) -> list[Entry]:
    removed = []
    for entry in found:
        if entry.path.is_dir():
            shutil.rmtree(entry.path)
        else:
            entry.path.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def current_stores(root: str | os.PathLike) -> dict[str, Path]:
    """``{animal: store path}`` that the unit files of ``root`` map to now (existing or not).

    Nothing is read or written (see :func:`aa4xr.store.store_path`).
    """
    from .layout import find_animals, resolve_root
    from .store import store_path

    root = resolve_root(root)
    return {a: store_path(root, a) for a in find_animals(root)}


def clear(root: str | os.PathLike | None = None) -> list[Entry]:
    """Empty the cache, or remove only ``root``'s current stores; return what was removed.

    Without ``root`` every store, spectrogram, md5 and sample corpus goes
    (all are rebuilt on the next open). With ``root``, its animals' stores
    matching the current unit files go, so the next open re-reads its files.
    """
    if root is None:
        return _remove(entries())
    targets = {p.resolve() for p in current_stores(root).values() if p.exists()}
    return _remove(e for e in entries() if e.kind == "stores" and e.path.resolve() in targets)


def _stims_of(store: Path) -> set[str]:
    from .store import load_tables

    tables = load_tables(store, prefixes=("group_",), names=["group_stim_md5"])
    return set(tables["group_stim_md5"].values.astype(str)) if "group_stim_md5" in tables else set()


def prune(roots: Iterable[str | os.PathLike]) -> list[Entry]:
    """Keep only what the current files of ``roots`` use; return what was removed.

    Removed: every store but those of ``roots``'s unit files as they are now
    (stale stores of changed files and stores of other roots), and every
    spectrogram whose stimulus (the md5 its name starts with) is in none of
    those stores. md5 digests and the sample corpus are kept.
    """
    keep = {p.resolve() for root in roots for p in current_stores(root).values() if p.exists()}
    stims = set().union(*(_stims_of(p) for p in keep))
    found = entries()
    stale = [e for e in found if e.kind == "stores" and e.path.resolve() not in keep]
    stale += [e for e in found if e.kind == "spectrograms" and e.path.name.split("-")[0] not in stims]
    return _remove(stale)
