"""Figure helpers shared by the experiments (matplotlib's Agg backend: no display needed).

Import pyplot from here, `from experiments._plot import plt, savefig`, so Agg is chosen first.
"""

import contextlib
import math
import os

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


# Drafts: the same figure at a quarter of the resolution, not cropped. The test suite turns
# them on ($JAXNETS_DRAFT_FIGURES=1, tests/conftest.py): its smoke runs only check that every
# figure is drawn and written, and full rendering was a fifth to a third of a smoke run's CPU.
_DRAFT = [os.environ.get("JAXNETS_DRAFT_FIGURES", "") == "1"]


@contextlib.contextmanager
def draft(enabled: bool = True):
    """While on, :func:`savefig` writes low-resolution drafts."""
    saved, _DRAFT[0] = _DRAFT[0], enabled
    try:
        yield
    finally:
        _DRAFT[0] = saved


def savefig(fig, path, *, dpi: int = 120) -> None:
    """Save `fig` to `path` (PNG unless the suffix says otherwise), tightly cropped; close it."""
    if _DRAFT[0]:
        fig.savefig(path, dpi=max(dpi // 4, 20))
    else:
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def tile(images, shape=(8, 8), ncols: int | None = None, *, pad: int = 1,
         symmetric: bool = False) -> np.ndarray:
    """Lay out images `(n, h*w)` or `(n, h, w)` on one canvas, `pad` NaN pixels between them.

    `ncols` defaults to about sqrt(n). `symmetric` divides each image by its largest |value|
    (weights: every image then spans [-1, 1] with 0 in the middle).

    >>> tile(np.ones((3, 4)), shape=(2, 2), ncols=2).shape
    (5, 5)
    """
    images = np.asarray(images, dtype=float).reshape(-1, *shape)
    if symmetric:
        scale = np.abs(images).max(axis=(1, 2), keepdims=True)
        images = images / np.where(scale > 0, scale, 1.0)
    n, (h, w) = len(images), shape
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    canvas = np.full((nrows * (h + pad) - pad, ncols * (w + pad) - pad), np.nan)
    for i, image in enumerate(images):
        r, c = divmod(i, ncols)
        canvas[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = image
    return canvas


def image_grid(ax, images, shape=(8, 8), ncols: int | None = None, *, symmetric: bool = False,
               cmap: str | None = None):
    """Draw images (digits; first-layer weight rows `W[j]` with `symmetric=True`) as a grid on `ax`.

    Grey scale for images, red/blue around 0 for `symmetric`; returns the `AxesImage`
    (for `fig.colorbar`).
    """
    canvas = tile(images, shape, ncols, symmetric=symmetric)
    if symmetric:
        vmin, vmax, cmap = -1.0, 1.0, cmap or "RdBu_r"
    else:
        vmin, vmax, cmap = np.nanmin(canvas), np.nanmax(canvas), cmap or "gray_r"
    ax.set_axis_off()
    return ax.imshow(canvas, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
