"""Figure and JSON helpers for tools/analysis/.

Figures are built on :class:`matplotlib.figure.Figure` directly (rendered by
Agg when saved), so no pyplot state or GUI backend is touched.
"""
import json
import math
import os
import os.path as osp
from typing import Optional

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter

DPI = 110


def new_figure(rows: int, cols: int, panel_size=(3.0, 2.8), **kwargs):
    """A figure with a rows x cols grid of axes (always a 2-D array)."""
    fig = Figure(figsize=(panel_size[0] * cols, panel_size[1] * rows),
                 layout='constrained')
    axes = fig.subplots(rows, cols, squeeze=False, **kwargs)
    return fig, axes


def _numpy(data) -> np.ndarray:
    if isinstance(data, torch.Tensor):
        return data.detach().cpu().double().numpy()
    return np.asarray(data, dtype=np.float64)


def _colorbar(ax, image):
    # Plain tick labels: an offset ("1e-5 + 7.99") would overlap neighbours.
    bar = ax.figure.colorbar(image, ax=ax, fraction=0.05, pad=0.02,
                             format=FormatStrFormatter('%.6g'))
    bar.ax.tick_params(labelsize=6)


def heatmap(ax, data, title: str, xlabel='dim', ylabel='token'):
    """tokens x dims map, diverging colours centred on 0."""
    data = _numpy(data)
    limit = float(np.abs(data).max()) or 1.0
    image = ax.imshow(data, cmap='coolwarm', vmin=-limit, vmax=limit,
                      aspect='auto', interpolation='nearest')
    _colorbar(ax, image)
    ax.set_title(title, fontsize=8)
    ax.set_xlabel(xlabel, fontsize=7)
    ax.set_ylabel(ylabel, fontsize=7)
    ax.tick_params(labelsize=6)


def blank(ax, text: str):
    """An empty panel that says why it is empty."""
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha='center', va='center', wrap=True,
            fontsize=8, transform=ax.transAxes)


def overlay(ax, image: np.ndarray, grid, title: str, alpha: float = 0.55):
    """A (h, w) token map stretched over an (H, W[, 3]) image."""
    height, width = image.shape[:2]
    ax.imshow(image, cmap='gray' if image.ndim == 2 else None)
    shown = ax.imshow(_numpy(grid), cmap='jet', alpha=alpha,
                      extent=(0, width, height, 0), interpolation='nearest')
    _colorbar(ax, shown)
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()


def save_figure(fig: Figure, path: str) -> str:
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def jsonable(value):
    """Tensors/arrays to lists, NaN/inf to None (strict JSON)."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return jsonable(_numpy(value).tolist())
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_json(path: str, data: dict) -> str:
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(jsonable(data), f, indent=2, allow_nan=False)
    return path


def fmt(value: Optional[float], digits: int = 3) -> str:
    return 'n/a' if value is None or not math.isfinite(value) else \
        f'{value:.{digits}f}'
