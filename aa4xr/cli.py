"""The ``aa4xr`` command: ``info``, ``inspect``, ``fetch``, ``sample``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _info(args: argparse.Namespace) -> int:
    from .report import format_summary, summarize

    sort_types = None if args.all_units else tuple(args.sort_types.split(","))
    print(format_summary(summarize(args.root, sort_types=sort_types, progress=sys.stderr.isatty())))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from .plot import inspect_figures

    for path in inspect_figures(args.root, args.out, dt=args.dt):
        print(path)
    return 0


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


def parser() -> argparse.ArgumentParser:
    """The command-line parser (one sub-command per verb)."""
    p = argparse.ArgumentParser(prog="aa4xr", description="The CRCNS AA4 dataset as xarray.")
    sub = p.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="summarise a root (default: the built-in sample)")
    info.add_argument("root", nargs="?", default=None, help="folder holding <animal>/ folders")
    info.add_argument("--sort-types", default="single,multi", help="sort types kept (comma-separated)")
    info.add_argument("--all-units", action="store_true", help="keep every sort type")
    info.set_defaults(func=_info)
    inspect = sub.add_parser("inspect", help="write the single-cell view and the population rasters "
                             "(Dataset order, and by electrode) as PNG files and print their paths")
    inspect.add_argument("root", nargs="?", default=None, help="folder holding <animal>/ folders "
                         "(default: the built-in sample)")
    inspect.add_argument("--out", default=".", help="folder of the PNG files (default: the current folder)")
    inspect.add_argument("--dt", type=float, default=0.005, help="bin width in seconds (default: 0.005)")
    inspect.set_defaults(func=_inspect)
    sample = sub.add_parser("sample", help="write the built-in sample corpus and print its path")
    sample.add_argument("path", nargs="?", default=None, help="where to write it (default: the cache)")
    sample.set_defaults(func=_sample)
    fetch = sub.add_parser("fetch", help="download and unpack AA4 from CRCNS (free crcns.org account; "
                           "credentials from $CRCNS_USERNAME / $CRCNS_PASSWORD)")
    fetch.add_argument("--animals", nargs="+", default=None, metavar="ANIMAL", help="default: all six")
    fetch.add_argument("--path", default=None,
                       help="where to unpack (default: $AA4XR_DATA_DIR or the user data dir)")
    fetch.set_defaults(func=_fetch)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aa4xr`` console command."""
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"aa4xr {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
