"""The ``aa4xr`` command: ``info``, ``check``, ``inspect``, ``fetch``, ``sample``, ``cache``.

Options taking several values take them space- or comma-separated, the
same in every sub-command: ``--animals A B`` is ``--animals A,B``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__

#: Sort types ``aa4xr info`` keeps unless told otherwise (as ``open_aa4``).
DEFAULT_SORT_TYPES = ("single", "multi")


class _Names(argparse.Action):
    """Collect the values of a multi-value option, each word split at commas."""

    def __call__(self, parser, namespace, values, option_string=None):
        names = [n for word in values for n in word.split(",") if n]
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest) or []), *names])


def _multi(p: argparse.ArgumentParser, flag: str, help: str, metavar: str) -> None:
    """A multi-value option, spelled alike in every sub-command (space- or comma-separated)."""
    p.add_argument(flag, nargs="+", action=_Names, default=None, metavar=metavar,
                   help=f"{help} (space- or comma-separated)")


def _root(p: argparse.ArgumentParser, help: str = "folder holding <animal>/ folders "
          "(default: the built-in sample)") -> None:
    p.add_argument("root", nargs="?", default=None, help=help)


def _info(args: argparse.Namespace) -> int:
    from .report import format_summary, summarize

    sort_types = None if args.all_units else (args.sort_types or list(DEFAULT_SORT_TYPES))
    print(format_summary(summarize(args.root, sort_types=sort_types, progress=sys.stderr.isatty())))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from .plot import inspect_figures

    for path in inspect_figures(args.root, args.out, dt=args.dt, animals=args.animals, errors=args.errors,
                                neuron=args.neuron, stim=args.stim):
        print(path)
    return 0


def _check(args: argparse.Namespace) -> int:
    from .checks import check, format_check

    table = check(args.root, progress=sys.stderr.isatty())
    print(format_check(table))
    if args.table:
        table.to_csv(args.table, index=False)
    problem = bool(table["problem"].any())
    if args.verify:
        from .checks import verify_readers

        verified = verify_readers(args.root)
        print("direct reader vs h5py, file by file:")
        for outcome, n in verified["outcome"].str.split(":").str[0].value_counts().items():
            print(f"  {'!' if outcome == 'differs' else ' '} {outcome}: {n}")
        for row in verified[verified["outcome"] != "identical"].itertuples():
            print(f"      {row.path}: {row.outcome}")
        problem |= bool(verified["problem"].any())
    return 1 if problem else 0


def _sample(args: argparse.Namespace) -> int:
    from .synthetic import sample_corpus

    print(sample_corpus(args.path))
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from .fetch import FetchError, fetch_aa4

    try:
        root = fetch_aa4(args.animals, args.path, progressbar=sys.stderr.isatty())
    except FetchError as exc:
        print(f"aa4xr fetch: error: {exc}", file=sys.stderr)
        return 2
    print(root)
    return 0


def _cache(args: argparse.Namespace) -> int:
    from . import _cache as cache

    if args.action == "info":
        print(cache.format_info())
        return 0
    if args.action == "clear":
        if len(args.roots) > 1:
            raise ValueError(f"clear takes at most one ROOT, got {args.roots}")
        removed = cache.clear(args.roots[0] if args.roots else None)
    else:
        removed = cache.prune(args.roots or [p for p in [cache.sample_dir()] if p.is_dir()])
    for entry in removed:
        print(f"removed {entry.path}")
    print(f"freed {cache.format_size(sum(e.bytes for e in removed))} in {len(removed)} items of {cache.cache_dir()}")
    return 0


def parser() -> argparse.ArgumentParser:
    """The command-line parser (one sub-command per verb)."""
    p = argparse.ArgumentParser(prog="aa4xr", description="The CRCNS AA4 dataset as xarray.")
    p.add_argument("--version", action="version", version=f"aa4xr {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="summarise a root (default: the built-in sample)")
    _root(info)
    _multi(info, "--sort-types", "sort types kept (default: single multi)", "TYPE")
    info.add_argument("--all-units", action="store_true", help="keep every sort type")
    info.set_defaults(func=_info)

    inspect = sub.add_parser("inspect", help="write the single-cell view and the population rasters "
                             "(Dataset order, and by electrode) as PNG files and print their paths")
    _root(inspect)
    inspect.add_argument("--out", default=".", help="folder of the PNG files (default: the current folder)")
    inspect.add_argument("--dt", type=float, default=0.005, help="bin width in seconds (default: 0.005)")
    _multi(inspect, "--animals", "animals to open (default: all)", "ANIMAL")
    inspect.add_argument("--neuron", default=None, help="neuron of the single-cell view, <animal>/<stem> "
                         "(default: the one that heard most stimuli)")
    inspect.add_argument("--stim", default=None, help="stimulus (md5) of the population rasters "
                         "(default: the first of the single-cell view)")
    inspect.add_argument("--errors", choices=("raise", "warn"), default="raise",
                         help="on an unreadable unit file: stop, or skip it with a warning (default: raise)")
    inspect.set_defaults(func=_inspect)

    check = sub.add_parser("check", help="what a root holds and how aa4xr reads it, for a bug report; "
                           "exits 1 when something would be read wrong or not at all")
    _root(check)
    check.add_argument("--table", default=None, metavar="CSV", help="also write the findings as a CSV table")
    check.add_argument("--verify", action="store_true", help="also read every unit file with both HDF5 "
                       "readers (direct and h5py) and compare the results file by file")
    check.set_defaults(func=_check)

    sample = sub.add_parser("sample", help="write the built-in sample corpus and print its path")
    sample.add_argument("path", nargs="?", default=None, help="where to write it (default: the cache)")
    sample.set_defaults(func=_sample)

    fetch = sub.add_parser("fetch", help="download and unpack AA4 from CRCNS (free crcns.org account; "
                           "credentials from $CRCNS_USERNAME / $CRCNS_PASSWORD)")
    _multi(fetch, "--animals", "animals to fetch (default: all six)", "ANIMAL")
    fetch.add_argument("--path", default=None,
                       help="where to unpack (default: $AA4XR_DATA_DIR or the user data dir)")
    fetch.set_defaults(func=_fetch)

    cache = sub.add_parser("cache", help="where the cache is and what it holds; clear or prune it",
                           description="info: the cache folder and its stores, spectrograms, md5s and "
                           "sample corpus, with sizes. clear [ROOT]: remove everything, or only ROOT's "
                           "stores. prune [ROOT ...]: keep only the stores and spectrograms that the "
                           "current files of the ROOTs (default: the built-in sample) use.")
    cache.add_argument("action", choices=("info", "clear", "prune"))
    cache.add_argument("roots", nargs="*", metavar="ROOT", help="AA4 root(s), see above")
    cache.set_defaults(func=_cache)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aa4xr`` console command (and of ``python -m aa4xr``)."""
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"aa4xr {args.command}: error: {message}", file=sys.stderr)
        if "errors='warn'" in str(message) and args.command == "inspect":
            print("aa4xr inspect: hint: --errors warn skips unreadable unit files", file=sys.stderr)
        return 2
