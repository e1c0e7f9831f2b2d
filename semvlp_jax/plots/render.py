"""Figures to pixels, without pyplot: PNG bytes and files, RGB arrays, notebook display."""

from __future__ import annotations

import io
import os

import numpy as np
from etils import epath
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def to_png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def save_png(figure: Figure, path: str | os.PathLike) -> epath.Path:
    """Writes the figure as a PNG at its own size and dpi (a local path or gs://)."""
    path = epath.Path(path)
    path.write_bytes(to_png(figure))
    return path


def to_rgb(figure: Figure) -> np.ndarray:
    """The figure rendered as uint8 RGB [height, width, 3]."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def show(figure: Figure) -> None:
    """Displays the figure in a notebook as a PNG, whatever matplotlib backend is active."""
    from IPython.display import Image, display

    display(Image(to_png(figure)))
