"""Find animals, unit files and wav files under an AA4 root; decode attributes.

The AA4 layout (see ``AA4_FORMAT.md``)::

    <root>/<animal>/<unit>.h5
    <root>/<animal>/wavfiles/stim<N>.wav

Anything that is not ``*.h5`` (or a ``stim<N>.wav``) is ignored.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ._validate import check_choices, warn_user

#: Unit file names: ``Site<S>_L<ldepth>R<rdepth>_e<electrode>_s<sort>[_ss<k>].h5``,
#: either depth may be missing.
UNIT_NAME = re.compile(
    r"^Site(?P<site>\d+)_(?:L(?P<ldepth>\d+))?(?:R(?P<rdepth>\d+))?"
    r"_e(?P<electrode>\d+)_s(?P<sort_id>\d+)(?:_ss(?P<subsort_id>\d+))?$"
)
WAV_NAME = re.compile(r"^stim(?P<number>\d+)\.wav$")
#: Sort types as written, normalised (``singl`` is a typo in some files).
SORT_TYPES = {"single": "single", "singl": "single", "multi": "multi", "noise": "noise", "tdt": "tdt"}


def decode_attr(value: Any) -> Any:
    """Decode one HDF5 attribute value to a plain Python scalar.

    Strings arrive as ``str``, ``bytes``/``numpy.bytes_`` or 1-element arrays
    of bytes; numbers as ints or float64 scalars (possibly 1-element arrays);
    the string ``"None"`` means missing and becomes ``None``.

    Examples
    --------
    >>> decode_attr(np.array([b"Call1"]))
    'Call1'
    >>> decode_attr(np.float64(3.0))
    3.0
    >>> decode_attr("None") is None
    True
    """
    if isinstance(value, np.ndarray):
        if value.size == 1:
            return decode_attr(value.reshape(-1)[0])
        return value
    if isinstance(value, (bytes, np.bytes_)):
        value = bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, str):
        value = value.strip()
        return None if value == "None" else value
    if isinstance(value, np.generic):
        return value.item()
    return value


def wav_file_name(tdt_wavfile: str | None) -> str:
    r"""The sound's file name from a ``tdt_wavfile`` attribute ("" when absent).

    The lab finds a sound by the part of ``tdt_wavfile`` after ``Stims/``;
    either path separator may occur.

    Examples
    --------
    >>> wav_file_name("/auto/fdata/solveig/Stims/stim12.wav")
    'stim12.wav'
    >>> wav_file_name("C:\\Stims\\stim3.wav"), wav_file_name(None), wav_file_name("None")
    ('stim3.wav', '', '')
    """
    if not tdt_wavfile or tdt_wavfile in ("None", "nan"):
        return ""
    return re.split(r"[\\/]", str(tdt_wavfile).strip())[-1]


def parse_unit_name(stem: str) -> dict[str, Any]:
    """Parse a unit file stem into site, depths, electrode and sort ids.

    Returns NaN for absent depths and subsort id. A stem that does not follow
    the AA4 pattern raises ``ValueError`` naming it.

    Examples
    --------
    >>> parse_unit_name("Site1_L1400R1400_e10_s0_ss1")["subsort_id"]
    1.0
    >>> parse_unit_name("Site2_R900_e3_s1")["ldepth"]
    nan
    """
    match = UNIT_NAME.match(stem)
    if match is None:
        raise ValueError(
            f"unit file name {stem!r} does not follow the AA4 pattern "
            "Site<S>_L<ldepth>R<rdepth>_e<electrode>_s<sort>[_ss<k>].h5"
        )
    g = match.groupdict()
    as_float = lambda v: float(v) if v is not None else np.nan  # noqa: E731
    return {
        "site": f"Site{g['site']}",
        "ldepth": as_float(g["ldepth"]),
        "rdepth": as_float(g["rdepth"]),
        "electrode": int(g["electrode"]),
        "sort_id": int(g["sort_id"]),
        "subsort_id": as_float(g["subsort_id"]),
    }


def resolve_root(root: str | os.PathLike | None) -> Path:
    """Return the corpus root, the built-in sample when ``root`` is None.

    Raises ``FileNotFoundError`` naming the path when it does not exist.
    """
    if root is None:
        from ._cache import default_root

        return default_root()
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"AA4 root {str(path)!r} does not exist or is not a folder")
    return path.resolve()


def find_animals(root: Path, errors: str = "raise") -> list[str]:
    """Animal folders under ``root``: sub-folders holding at least one unit file.

    A sub-folder that cannot be listed (no permission) might be an animal: it
    raises ``PermissionError`` naming it, or with ``errors="warn"`` is left out
    with a warning naming it. Raises ``FileNotFoundError`` when no animal is
    found, saying what was expected.
    """
    animals = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            names = os.listdir(folder)
        except PermissionError as exc:
            message = f"cannot list the folder {str(folder)!r} ({exc.strerror}): its units would be missing"
            if errors == "raise":
                raise PermissionError(f"{message}; fix its permissions, or open with errors='warn' to leave "
                                      "it out") from exc
            warn_user(f"{message}; left out")
            continue
        if any(name.endswith(".h5") and UNIT_NAME.match(name[:-3]) for name in names):
            animals.append(folder.name)
    if not animals:
        raise FileNotFoundError(
            f"no animal folders under {str(root)!r}: expected <root>/<animal>/<unit>.h5 "
            "(e.g. LblBlu2028M/Site1_L1400R1400_e10_s0.h5)"
        )
    return animals


def select_animals(available: list[str], animals: Iterable[str] | str | None) -> list[str]:
    """Check a user's animal selection against the animals found.

    Examples
    --------
    >>> select_animals(["A", "B"], "B")
    ['B']
    """
    return list(available) if animals is None else check_choices(animals, "animals", tuple(available))


def find_unit_files(root: Path, animal: str) -> pd.DataFrame:
    """One row per unit file of an animal (a ``*.h5`` named like a unit), sorted by name.

    Columns: ``animal``, ``stem``, ``path`` (absolute), ``size``, ``mtime_ns``.
    Other ``*.h5`` files (e.g. ``Old_Units*.h5``) are listed by
    :func:`find_other_files`, never read as units.
    """
    rows = []
    for path in sorted((root / animal).glob("*.h5")):
        if not UNIT_NAME.match(path.stem):
            continue
        stat = path.stat() if path.exists() else path.lstat()  # a broken link: the reader names it
        rows.append(
            {"animal": animal, "stem": path.stem, "path": str(path),
             "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        )
    return pd.DataFrame(rows, columns=["animal", "stem", "path", "size", "mtime_ns"])


def find_other_files(root: Path, animals: Iterable[str]) -> list[str]:
    """The ``*.h5`` files of the animals' folders that are not unit files by name.

    Examples
    --------
    >>> from aa4xr.synthetic import sample_corpus
    >>> [Path(p).name for p in find_other_files(sample_corpus(), ["LblBlu2028M"])][:1]
    ['Old_Units_Site2_L2200R2700_e31_s2_ss1.h5']
    """
    return [str(path) for animal in animals for path in sorted((root / animal).glob("*.h5"))
            if not UNIT_NAME.match(path.stem)]


def find_wav_files(root: Path, animals: Iterable[str]) -> pd.DataFrame:
    """One row per ``<animal>/wavfiles/stim<N>.wav``: ``animal``, ``number``, ``path``."""
    rows = []
    for animal in animals:
        for path in sorted((root / animal / "wavfiles").glob("stim*.wav")):
            match = WAV_NAME.match(path.name)
            if match:
                rows.append({"animal": animal, "number": int(match["number"]), "path": str(path)})
    return pd.DataFrame(rows, columns=["animal", "number", "path"])
