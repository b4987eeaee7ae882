"""Import benchmark: ``import aa4xr`` against its own floor (numpy + pandas + xarray), side by side.

    python benchmarks/import_time.py [--repeat 7]

Each stage runs in a fresh interpreter, timed inside it (the interpreter's
own start-up excluded); the table gives the median and the ratio to the floor.
The goal of issue 14: ``import aa4xr`` under 0.5 s (scipy, dask, h5py,
matplotlib and torch load on first use). ``python -X importtime -c "import
aa4xr"`` shows where the time goes.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

STAGES = {
    "floor: import numpy, pandas, xarray": "import numpy, pandas, xarray",
    "import aa4xr": "import aa4xr",
    "import aa4xr; aa4xr.open_aa4 (first use of the API)": "import aa4xr; aa4xr.open_aa4",
}


def import_seconds(code: str) -> float:
    """Seconds ``code`` takes in a fresh interpreter."""
    timed = f"import time; t = time.perf_counter(); {code}; print(time.perf_counter() - t)"
    done = subprocess.run([sys.executable, "-c", timed], capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=7)
    args = p.parse_args()
    times = {name: [] for name in STAGES}
    for _ in range(args.repeat):  # interleaved, so load changes hit every stage alike
        for name, code in STAGES.items():
            times[name].append(import_seconds(code))
    floor = statistics.median(times[next(iter(STAGES))])
    print(f"| stage (median of {args.repeat}) | seconds | x floor |\n|---|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.3f} | {median / floor:.2f} |")


if __name__ == "__main__":
    main()
