"""The inspection notebook runs top to bottom, and is committed without outputs."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "aa4_inspection.ipynb"

nbformat = pytest.importorskip("nbformat")


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert nb.metadata.kernelspec.name == "python3"


def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    """Executed in a temporary working directory; the kernel inherits the session's
    AA4XR_CACHE_DIR (set by conftest), so the sample and its store go to the test cache."""
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.chdir(tmp_path)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=600,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the cell on any error
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    figures = {c.source: o["data"]["image/png"] for c in nb.cells if c.cell_type == "code" for o in c.outputs
               if "image/png" in o.get("data", {})}
    assert len(figures) == 4
    assert not list(tmp_path.iterdir())  # it wrote nothing in the working directory
    # the coverage image and both population rasters show never-heard pairs in the plot's grey
    for call in ("plot.coverage(", "plot.population_raster(ds, stim)", 'plot.population_raster(ds, stim, sort="electrode")'):
        (png,) = [data for source, data in figures.items() if call in source]
        assert grey_pixels(png) > 500, call
    (single_cell,) = [source for source in figures if "plot.single_cell(" in source]
    assert "max_stims=4" in single_cell


def grey_pixels(png_base64: str) -> int:
    """Pixels of a PNG drawn in aa4xr.plot.UNHEARD_COLOR (the never-heard grey)."""
    import numpy as np
    from matplotlib.colors import to_rgb
    from matplotlib.image import imread

    from aa4xr.plot import UNHEARD_COLOR

    image = imread(io.BytesIO(base64.b64decode(png_base64)), format="png")[..., :3]
    return int(np.isclose(image, to_rgb(UNHEARD_COLOR), atol=1.5 / 255).all(-1).sum())
