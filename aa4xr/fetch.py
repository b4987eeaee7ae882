"""Download the CRCNS AA4 archives through pooch and unpack them safely.

CRCNS serves AA4 from ``download.crcns.org`` behind a crcns.org login (see
``AA4_FORMAT.md``, "Download"). :class:`CRCNSDownloader` is a pooch
downloader that logs in, checks the login took, and streams a file with a
progress bar, resuming a partial download with an HTTP Range request and
checking its size against the server's ``filelist.txt``.
:func:`extract_archive` unpacks an archive without letting any member escape
the target folder. :func:`fetch_aa4` ties both together, once per animal:

>>> root = fetch_aa4(["LblBlu2028M"])                       # doctest: +SKIP
>>> ds = aa4xr.open_aa4(root)                                # doctest: +SKIP

Credentials never leave the downloader: they appear in no error message, log
record, file or ``repr``.
"""

from __future__ import annotations

import errno
import gzip
import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from importlib import resources
from itertools import chain
from pathlib import Path, PureWindowsPath

import platformdirs
import pooch
import requests
import urllib3
from tqdm import tqdm

__all__ = [
    "ANIMALS",
    "CRCNSDownloader",
    "CorruptArchiveError",
    "CredentialsError",
    "DiskSpaceError",
    "DownloadError",
    "FetchError",
    "LoginError",
    "MissingFileError",
    "UnknownAnimalError",
    "UnsafeArchiveError",
    "extract_archive",
    "fetch_aa4",
    "parse_filelist",
]

LOG = logging.getLogger(__name__)

#: The six birds of AA4, one archive ``<animal>.tar.gz`` each.
ANIMALS = ("BlaBro09xxF", "GreBlu9508M", "LblBlu2028M", "WhiBlu5396M", "WhiWhi4522M", "YelBlu6903F")
LOGIN_URL = "https://crcns.org/login_form"
DOWNLOAD_URL = "https://download.crcns.org"
DATASET = "aa-4"
#: Where the data go when ``path`` is not given (else the platform's user data dir).
DATA_DIR_ENV = "AA4XR_DATA_DIR"
CREDENTIAL_ENVS = ("CRCNS_USERNAME", "CRCNS_PASSWORD")
#: Known SHA-256 of the archives, in pooch's registry format (``name hash`` per line).
REGISTRY_FILE = resources.files("aa4xr") / "registry.txt"
#: Written into ``<root>/<animal>/`` once that archive is fully unpacked.
MARKER = ".aa4xr-fetch.json"
LOGGED_IN = "Logged in as"
GZIP_MAGIC = b"\x1f\x8b"
CHUNK_SIZE = 1 << 16
#: tarfile's own safety filter where this Python has it (3.12; 3.10.12 and 3.11.4 backports).
_DATA_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
#: Seconds to wait before the n-th resumption of a broken download (times n).
RETRY_WAIT = 2.0


class FetchError(RuntimeError):
    """Base class of every error raised while fetching AA4.

    Its message never holds a URL's query string or fragment (a login
    redirect may carry the username there): they are cut on construction.
    """

    def __init__(self, message: str) -> None:
        super().__init__(_without_queries(message))


class UnknownAnimalError(FetchError, ValueError):
    """An animal that AA4 does not hold."""


class CredentialsError(FetchError):
    """No crcns.org username or password was given."""


class LoginError(FetchError):
    """crcns.org did not accept the login."""


class MissingFileError(FetchError):
    """The server does not hold the requested file."""


class DownloadError(FetchError):
    """The download failed (connection broken too often, server error)."""


class CorruptArchiveError(FetchError):
    """A downloaded file is truncated, corrupt or not the expected archive."""


class UnsafeArchiveError(CorruptArchiveError):
    """An archive member would escape the target folder or is not a plain file."""


class DiskSpaceError(FetchError):
    """Not enough free disk space to download or unpack."""


class CRCNSDownloader:
    """A pooch downloader for files behind the crcns.org login.

    Called as ``downloader(url, output_file, pooch_obj)``, it logs in once
    (per instance), checks that the folder page holding ``url`` reads "Logged
    in as", then streams ``url`` into ``output_file``. Bytes land first in
    ``<name>.part`` next to ``output_file``; a broken connection is resumed
    with ``Range: bytes=<received>-``, here up to ``retries`` times and in a
    later call too, since the ``.part`` file is kept. The size is checked
    against the folder's ``filelist.txt`` when it lists the file, and a
    ``.gz`` file must start with the gzip magic bytes.

    Parameters
    ----------
    username, password : str
        A crcns.org account. Kept private: never shown in ``repr``, errors or logs.
    login_url : str
        The crcns.org login form.
    progressbar : bool
        Show a tqdm progress bar on stderr.
    retries : int
        How many times a broken download is resumed before giving up.
    timeout : float
        Seconds to wait for the server to answer or to send more bytes.

    Examples
    --------
    >>> downloader = CRCNSDownloader("me", "secret")
    >>> downloader
    CRCNSDownloader(login_url='https://crcns.org/login_form')
    >>> pooch.retrieve(                                         # doctest: +SKIP
    ...     "https://download.crcns.org/aa-4/CRCNSCode.tar.gz", None, downloader=downloader
    ... )
    """

    def __init__(self, username: str, password: str, *, login_url: str = LOGIN_URL,
                 progressbar: bool = False, retries: int = 3, timeout: float = 60.0) -> None:
        self._credentials = (username, password)
        self.login_url = login_url
        self.progressbar = progressbar
        self.retries = retries
        self.timeout = timeout
        self.session = requests.Session()
        self._logged_in = False
        self._sizes: dict[str, dict[str, int]] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(login_url={self.login_url!r})"

    def __call__(self, url: str, output_file: str | os.PathLike, pooch_obj: pooch.Pooch | None = None,
                 check_only: bool = False) -> bool | None:
        """Download ``url`` into ``output_file``, or only say whether it is there."""
        folder, name = url.rsplit("/", 1)
        self.login(folder)
        if check_only:
            with _network_errors(f"checking {url}"), self._get(url) as response:
                return response.ok and not _is_html(response)
        part = Path(output_file).with_name(f"{name}.part")
        expected = self.file_sizes(folder).get(name)
        try:
            self._download(url, part, expected)
        except OSError as error:
            if error.errno == errno.ENOSPC:
                raise DiskSpaceError(
                    f"the disk holding {part.parent} filled up while downloading {name}"
                ) from None
            raise
        os.replace(part, output_file)

    def login(self, folder_url: str) -> None:
        """Log in to crcns.org and check that ``folder_url`` reads "Logged in as".

        Examples
        --------
        >>> CRCNSDownloader("me", "secret").login("https://download.crcns.org/aa-4")  # doctest: +SKIP
        """
        if self._logged_in:
            return
        username, password = self._credentials
        form = {"__ac_name": username, "__ac_password": password, "form.submitted": "1",
                "js_enabled": "0", "pwd_empty": "0", "submit": "Log in"}
        with _network_errors("logging in to crcns.org"):
            answer = self.session.post(self.login_url, data=form, timeout=self.timeout)
            page = self.session.get(folder_url, timeout=self.timeout)
        for response in (answer, page):
            if not response.ok:  # (a redirect's query may hold the username: FetchError cuts it)
                raise LoginError(f"{response.url} answered HTTP {response.status_code} to the login")
        if LOGGED_IN not in page.text:
            raise LoginError(
                f"crcns.org rejected the login: {folder_url} does not read {LOGGED_IN!r}. Check the "
                f"username and password (arguments, or ${CREDENTIAL_ENVS[0]} / ${CREDENTIAL_ENVS[1]})"
            )
        self._logged_in = True

    def file_sizes(self, folder_url: str) -> dict[str, int]:
        """The sizes in bytes that ``<folder_url>/filelist.txt`` lists, by file name.

        Empty (with a warning) when the server has no readable file list.

        Examples
        --------
        >>> CRCNSDownloader("me", "secret").file_sizes("https://download.crcns.org/aa-4")  # doctest: +SKIP
        {'BlaBro09xxF.tar.gz': 512345678, ...}
        """
        if folder_url not in self._sizes:
            with _network_errors(f"reading {folder_url}/filelist.txt"), \
                    self._get(f"{folder_url}/filelist.txt") as response:
                readable = response.ok and not _is_html(response)
                sizes = parse_filelist(response.text) if readable else {}
            if not sizes:
                LOG.warning("%s/filelist.txt lists no file: sizes cannot be checked", _without_queries(folder_url))
            self._sizes[folder_url] = sizes
        return self._sizes[folder_url]

    def _get(self, url: str, offset: int = 0) -> requests.Response:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        return self.session.get(url, headers=headers, stream=True, timeout=self.timeout)

    def _download(self, url: str, part: Path, expected: int | None) -> None:
        name = part.name.removesuffix(".part")
        for attempt in range(self.retries + 1):
            try:
                self._stream(url, part, expected)
                break
            except _NETWORK_ERRORS as error:
                kept = part.stat().st_size if part.exists() else 0
                if attempt == self.retries:  # (no chained error: its text may hold a URL's query)
                    raise DownloadError(
                        f"the download of {name} broke off {attempt + 1} times ({type(error).__name__}: "
                        f"{error}); the {kept} bytes received are kept in {part}: run again to resume"
                    ) from None
                LOG.warning("download of %s broke off after %d bytes, resuming", name, kept)
                time.sleep(RETRY_WAIT * (attempt + 1))
        size = part.stat().st_size
        if expected is not None and size != expected:
            part.unlink()
            raise CorruptArchiveError(
                f"{name} is truncated or corrupt: received {size} bytes where filelist.txt lists "
                f"{expected}; the download was removed, run again to download it anew"
            )

    def _stream(self, url: str, part: Path, expected: int | None) -> None:
        offset = part.stat().st_size if part.exists() else 0
        if expected is not None and offset >= expected:
            if offset == expected:
                return
            offset = 0
        name = part.name.removesuffix(".part")
        if expected is not None:
            _check_disk_space(part.parent, expected - offset, f"downloading {name}")
        response = self._get(url, offset)
        if offset and (response.status_code == 416 or _range_start(response) not in (offset, None)):
            response.close()  # the .part is no prefix of the file: start again
            offset, response = 0, self._get(url)
        with response:
            _check_answer(response, url)
            if response.status_code == 200:
                offset = 0  # the server ignored the Range header: it sends the whole file
            chunks = response.raw.stream(CHUNK_SIZE, decode_content=False)  # the bytes as served
            first = next(chunks, b"")
            if not offset and url.endswith((".gz", ".tgz")):
                _check_gzip_start(first, url)
            total = expected or _announced_size(response, offset)
            with open(part, "ab" if offset else "wb") as out, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=name, disable=not self.progressbar,
            ) as bar:
                for chunk in chain([first], chunks):
                    out.write(chunk)
                    bar.update(len(chunk))


#: What a broken connection raises, before or while the body streams.
_NETWORK_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError)


@contextmanager
def _network_errors(what: str) -> Iterator[None]:
    """Turn a network failure into a :class:`DownloadError` saying what failed."""
    try:
        yield
    except _NETWORK_ERRORS as error:
        raise DownloadError(f"{what} failed: {type(error).__name__}: {error}") from None


def _is_html(response: requests.Response) -> bool:
    return "text/html" in response.headers.get("Content-Type", "").lower()


#: A URL (``scheme://...``, or the ``url: /path`` urllib3 prints) followed by a query or a fragment.
_QUERY = re.compile(r"((?:\b[a-z][a-z0-9+.-]*://|\burl: )[^\s?#'\"<>]*)[?#][^\s'\"<>]*", re.IGNORECASE)


def _without_queries(text: str) -> str:
    """``text`` with the query string and fragment cut from every URL in it.

    Examples
    --------
    >>> _without_queries("https://crcns.org/login?__ac_name=me failed; url: /in?a=b (Caused by X)")
    'https://crcns.org/login failed; url: /in (Caused by X)'
    """
    return _QUERY.sub(r"\1", text)


def _range_start(response: requests.Response) -> int | None:
    """First byte of a 206 answer (from ``Content-Range``), None for any other answer."""
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(match[1]) if response.status_code == 206 and match else None


def _announced_size(response: requests.Response, offset: int) -> int | None:
    match = re.search(r"/(\d+)$", response.headers.get("Content-Range", ""))
    if match:
        return int(match[1])
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def _check_answer(response: requests.Response, url: str) -> None:
    """Raise when the server answered ``url`` with anything but (part of) the file."""
    if response.status_code in (404, 410):
        raise MissingFileError(
            f"the server holds no {url.rsplit('/', 1)[1]}: {url} answered HTTP {response.status_code}"
        )
    if response.ok and _is_html(response):
        _raise_html_answer(url)
    if response.status_code in (401, 403):
        raise LoginError(f"{url} answered HTTP {response.status_code}: the login did not take")
    if response.status_code not in (200, 206):
        raise DownloadError(f"{url} answered HTTP {response.status_code}")


def _raise_html_answer(url: str) -> None:
    """Raise for an HTML page served in place of the file at ``url`` (after a confirmed login)."""
    raise MissingFileError(
        f"the server holds no {url.rsplit('/', 1)[1]}: {url} answered with an HTML page instead "
        "of the file (if the file is listed on the server, the login may have expired: run again)"
    )


def _check_gzip_start(first: bytes, url: str) -> None:
    """Raise unless the first bytes of a download (a whole chunk) start a gzip stream."""
    if first.startswith(GZIP_MAGIC):
        return
    if first.lstrip().startswith(b"<"):
        _raise_html_answer(url)
    raise CorruptArchiveError(f"{url} did not send a gzip archive: it starts with {first[:16]!r}")


def parse_filelist(text: str) -> dict[str, int]:
    """Sizes in bytes by file name from a CRCNS ``filelist.txt``.

    A line counts when it holds exactly one whole number (the size) and a
    path; the path's last component is the key. Blank lines, ``#`` comments,
    headers and lines with several numbers (e.g. ``ls -l`` dates) are skipped.

    Examples
    --------
    >>> parse_filelist("aa-4/LblBlu2028M.tar.gz 1234\\n# comment\\n99\\t./CRCNSCode.tar.gz\\n")
    {'LblBlu2028M.tar.gz': 1234, 'CRCNSCode.tar.gz': 99}
    """
    sizes = {}
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        tokens = [t.strip("\"'") for t in re.split(r"[\s,;|]+", line.strip()) if t]
        numbers = [t for t in tokens if t.isdigit()]
        paths = [t for t in tokens if not t.isdigit() and ("." in t or "/" in t)]
        if len(numbers) == 1 and paths:
            sizes[re.split(r"[\\/]", paths[-1])[-1]] = int(numbers[0])
    return sizes


def _check_disk_space(folder: str | os.PathLike, needed: int, what: str) -> None:
    """Raise :class:`DiskSpaceError` when ``folder``'s disk has less than ``needed`` bytes free.

    Examples
    --------
    >>> _check_disk_space(".", 1, "writing one byte")
    """
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise DiskSpaceError(
            f"{what} needs {_format_size(needed)} but the disk holding {folder} has "
            f"{_format_size(free)} free: free some space or choose another path"
        )


def _format_size(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            break
        size /= 1000
    else:
        unit = "TB"
    return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"


def _check_member(member: tarfile.TarInfo, archive: str) -> None:
    """Raise :class:`UnsafeArchiveError` naming ``member`` unless it is a plain, inner file or folder."""
    name = member.name
    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive:
        reason = "an absolute path"
    elif ".." in re.split(r"[\\/]", name):
        reason = "a '..' component"
    elif member.issym() or member.islnk():
        reason = f"a link to {member.linkname!r}"
    elif not (member.isfile() or member.isdir()):
        reason = "a device or other special file"
    else:
        return
    raise UnsafeArchiveError(f"{archive} holds the unsafe member {name!r} ({reason}): nothing was unpacked")


def extract_archive(archive: str | os.PathLike, root: str | os.PathLike, folder: str | None = None) -> Path:
    """Unpack ``archive`` (a ``.tar.gz`` holding ``<folder>/``) into ``root/<folder>``.

    Every member is checked first: an absolute path, a ``..`` component, a
    link or a special file refuses the whole archive. The members are
    unpacked into a hidden temporary folder under ``root`` (with tarfile's
    ``"data"`` filter too), then ``<folder>/`` is moved into place in one
    rename, with a marker file recording the archive's size and SHA-256, so
    that ``root/<folder>`` is either complete or absent.

    Parameters
    ----------
    archive : path
        The ``.tar.gz`` file.
    root : path
        Where ``<folder>/`` goes; it must not exist there yet.
    folder : str, optional
        The archive's top folder, by default its name without ``.tar.gz``.

    Returns
    -------
    pathlib.Path
        ``root/<folder>``.

    Examples
    --------
    >>> extract_archive("LblBlu2028M.tar.gz", "data")           # doctest: +SKIP
    PosixPath('data/LblBlu2028M')
    """
    archive, root = Path(archive), Path(root)
    folder = folder or archive.name.removesuffix(".tar.gz")
    target = root / folder
    if target.exists():
        raise FetchError(f"{target} already exists: remove it to unpack {archive.name} again")
    root.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, archive.name)
            _check_disk_space(root, sum(m.size for m in members), f"unpacking {archive.name}")
            with tempfile.TemporaryDirectory(prefix=f".{folder}.", suffix=".unpacking", dir=root) as tmp:
                tar.extractall(tmp, members=members, **_DATA_FILTER)
                unpacked = Path(tmp, folder)
                if not unpacked.is_dir():
                    raise CorruptArchiveError(f"{archive.name} does not unpack to {folder}/")
                marker = {"archive": archive.name, "size": archive.stat().st_size,
                          "sha256": pooch.file_hash(str(archive))}
                (unpacked / MARKER).write_text(json.dumps(marker, indent=1))
                os.replace(unpacked, target)
    except (tarfile.ReadError, tarfile.CompressionError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise CorruptArchiveError(f"{archive.name} is truncated or corrupt: {error}") from None
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise DiskSpaceError(
                f"the disk holding {root} filled up while unpacking {archive.name}"
            ) from None
        raise
    return target


def fetch_aa4(animals: Iterable[str] | str | None = None, path: str | os.PathLike | None = None, *,
              username: str | None = None, password: str | None = None, login_url: str = LOGIN_URL,
              download_url: str = DOWNLOAD_URL, progressbar: bool = True) -> Path:
    """Download and unpack the AA4 archives from CRCNS; return the root for ``open_aa4``.

    Each animal's ``<animal>.tar.gz`` is fetched with pooch and a
    :class:`CRCNSDownloader` (login, progress bar, resumption of a broken
    download, size check against ``filelist.txt``, SHA-256 check where
    ``aa4xr/registry.txt`` knows it), unpacked with :func:`extract_archive`
    into ``<root>/<animal>/``, then deleted. An animal already unpacked is
    skipped without any request, so a second call downloads nothing and
    needs no credentials.

    Parameters
    ----------
    animals : str or iterable of str, optional
        Animals to fetch, by default all six (:data:`ANIMALS`).
    path : path, optional
        The root, by default ``$AA4XR_DATA_DIR`` or the platform's user data
        folder for ``aa4xr``.
    username, password : str, optional
        A free crcns.org account, by default ``$CRCNS_USERNAME`` and
        ``$CRCNS_PASSWORD``.
    login_url : str
        The crcns.org login form.
    download_url : str
        The base under which ``aa-4/<file>`` is served.
    progressbar : bool
        Show a progress bar per download.

    Returns
    -------
    pathlib.Path
        The folder holding the ``<animal>/`` folders.

    Raises
    ------
    UnknownAnimalError, CredentialsError, LoginError, MissingFileError,
    DownloadError, CorruptArchiveError, UnsafeArchiveError, DiskSpaceError
        All subclasses of :class:`FetchError`.

    Examples
    --------
    >>> root = fetch_aa4("LblBlu2028M", username="me", password="...")  # doctest: +SKIP
    >>> ds = aa4xr.open_aa4(root)                                      # doctest: +SKIP
    """
    wanted = _check_animals(animals)
    root = _data_dir(path)
    pending = _pending(root, wanted)
    if not pending:
        return root
    downloader = CRCNSDownloader(*_credentials(username, password), login_url=login_url,
                                 progressbar=progressbar)
    archives = _archive_pooch(root, download_url)
    folder_url = archives.base_url.rstrip("/")
    downloader.login(folder_url)
    _check_listed(downloader.file_sizes(folder_url), pending, folder_url)
    for animal in pending:
        _fetch_animal(archives, downloader, animal)
    return root


def _check_animals(animals: Iterable[str] | str | None) -> list[str]:
    wanted = list(ANIMALS) if animals is None else [animals] if isinstance(animals, str) else list(animals)
    unknown = [a for a in wanted if a not in ANIMALS]
    if unknown:
        raise UnknownAnimalError(
            f"unknown animal(s) {', '.join(map(str, unknown))}; AA4 holds {' '.join(ANIMALS)}"
        )
    return list(dict.fromkeys(wanted))


def _data_dir(path: str | os.PathLike | None) -> Path:
    folder = path or os.environ.get(DATA_DIR_ENV) or platformdirs.user_data_dir("aa4xr")
    return Path(folder).expanduser().resolve()


def _pending(root: Path, animals: list[str]) -> list[str]:
    """The animals not unpacked yet under ``root``; raise for a folder that fetch_aa4 did not make."""
    pending = []
    for animal in animals:
        folder = root / animal
        if (folder / MARKER).is_file():
            continue
        if folder.exists():
            raise FetchError(
                f"{folder} exists but was not unpacked by fetch_aa4 (no {MARKER}): open it with "
                f"open_aa4({str(root)!r}) as it is, or remove it to fetch it again"
            )
        pending.append(animal)
    return pending


def _credentials(username: str | None, password: str | None) -> tuple[str, str]:
    given = (username or os.environ.get(CREDENTIAL_ENVS[0]), password or os.environ.get(CREDENTIAL_ENVS[1]))
    missing = [what for what, value in zip(("username", "password"), given) if not value]
    if missing:
        raise CredentialsError(
            f"downloading AA4 needs a free crcns.org account, but the {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} missing: pass username= and password=, or set "
            f"${CREDENTIAL_ENVS[0]} and ${CREDENTIAL_ENVS[1]}"
        )
    return given  # type: ignore[return-value]


def _archive_pooch(root: Path, download_url: str) -> pooch.Pooch:
    """A Pooch over the AA4 archives, with the SHA-256 that ``registry.txt`` knows."""
    archives = pooch.create(path=root, base_url=f"{download_url.rstrip('/')}/{DATASET}/",
                            registry=dict.fromkeys(f"{animal}.tar.gz" for animal in ANIMALS))
    with REGISTRY_FILE.open("rb") as registry:
        archives.load_registry(registry)
    return archives


def _check_listed(sizes: dict[str, int], animals: list[str], folder_url: str) -> None:
    unlisted = [f"{animal}.tar.gz" for animal in animals if f"{animal}.tar.gz" not in sizes]
    if sizes and unlisted:
        raise MissingFileError(
            f"the server holds no {', '.join(unlisted)}: {folder_url}/filelist.txt lists only "
            f"{', '.join(sorted(sizes))}"
        )


def _fetch_animal(archives: pooch.Pooch, downloader: CRCNSDownloader, animal: str) -> None:
    name = f"{animal}.tar.gz"
    try:
        archive = Path(archives.fetch(name, downloader=downloader))
    except ValueError as error:  # pooch's SHA-256 mismatch
        raise CorruptArchiveError(f"{name} is corrupt: {error}") from None
    try:
        extract_archive(archive, archives.abspath, animal)
    except CorruptArchiveError:
        archive.unlink()
        raise
    if archives.registry[name] is None:
        LOG.info("SHA-256 of %s: %s (record it in aa4xr/registry.txt)", name,
                 json.loads((archives.abspath / animal / MARKER).read_text())["sha256"])
    archive.unlink()
