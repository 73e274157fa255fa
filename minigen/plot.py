"""Figures: samples next to the data, image grids, latent spaces, text excerpts.

The only module that imports matplotlib (the ``plot`` extra), lazily and with the
non-interactive Agg backend, so figures can be written on a machine without a display. Every
function returns a matplotlib Figure; ``save(fig, path)`` writes it (creating the folder).
"""
import os

import numpy as np


def pyplot():
    """matplotlib.pyplot on the Agg backend, or a clear error naming the extra to install."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("minigen.plot needs matplotlib: pip install 'minigen[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def available():
    """True when matplotlib can be imported."""
    try:
        pyplot()
        return True
    except ImportError:
        return False


def save(fig, path, dpi=110):
    """Write ``fig`` to ``path`` (folders created) and close it; returns the path."""
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    return path


def image_grid(images, cols=10, side=None, pad=1):
    """Tile images (n, h, w), or flat rows (n, side*side), into one 2-D array with ``pad``
    blank pixels between them."""
    images = np.asarray(images, dtype=np.float64)
    if images.ndim == 2:
        side = side or int(round(np.sqrt(images.shape[1])))
        images = images.reshape(len(images), side, side)
    n, h, w = images.shape
    rows = max(1, -(-n // cols))
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad), np.nan)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h,
             pad + c * (w + pad):pad + c * (w + pad) + w] = image
    return grid


def _panel_axes(n, width, height, per_row=5):
    """A figure with n panels, at most ``per_row`` to a row; the axes in order (spares off)."""
    rows, cols = -(-n // per_row), min(n, per_row)
    fig, axes = pyplot().subplots(rows, cols, figsize=(width * cols, height * rows),
                                  squeeze=False)
    axes = list(axes.ravel())
    for ax in axes[n:]:
        ax.axis("off")
    return fig, axes[:n]


def image_panels(panels, cols=10, vmin=None, vmax=None, title=None):
    """One image grid per (label, images) pair (e.g. data | samples), five to a row."""
    fig, axes = _panel_axes(len(panels), 4.2, 4.4)
    for ax, (label, images) in zip(axes, panels):
        ax.imshow(image_grid(images, cols), cmap="gray_r", vmin=vmin, vmax=vmax,
                  interpolation="nearest")
        ax.set_title(label)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def scatter_panels(panels, title=None, limits=None, size=2):
    """One 2-D scatter per (label, points) pair, on shared axes limits, five to a row."""
    fig, axes = _panel_axes(len(panels), 3.6, 3.6)
    if limits is None:
        allp = np.concatenate([np.asarray(p)[:, :2] for _, p in panels])
        lo, hi = np.percentile(allp, [0.5, 99.5], axis=0)
        margin = 0.1 * (hi - lo)
        limits = (lo - margin, hi + margin)
    for ax, (label, points) in zip(axes, panels):
        points = np.asarray(points)
        ax.scatter(points[:, 0], points[:, 1], s=size, alpha=0.5, linewidths=0)
        ax.set_xlim(limits[0][0], limits[1][0])
        ax.set_ylim(limits[0][1], limits[1][1])
        ax.set_aspect("equal")
        ax.set_title(label, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def latent_scatter(codes, labels, title=None, background=None):
    """2-D codes coloured by class; ``background`` (optional points, e.g. prior or density
    samples) is drawn underneath in grey."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    if background is not None:
        ax.scatter(background[:, 0], background[:, 1], s=2, c="0.8", linewidths=0)
    points = ax.scatter(codes[:, 0], codes[:, 1], s=4, c=labels, cmap="tab10", linewidths=0)
    fig.colorbar(points, ax=ax, ticks=np.unique(labels))
    ax.set_title(title or "latent codes")
    fig.tight_layout()
    return fig


def histograms(panels, bins=60, title=None, density_fns=None):
    """One histogram per (label, values) pair; ``density_fns`` (label -> callable x -> pdf)
    overlays a curve on the panels it names."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 2.8), squeeze=False)
    for ax, (label, values) in zip(axes[0], panels):
        values = np.ravel(values)
        ax.hist(values, bins=bins, density=True, alpha=0.6)
        if density_fns and label in density_fns:
            x = np.linspace(values.min(), values.max(), 300)
            ax.plot(x, density_fns[label](x), "k-", lw=1)
        ax.set_title(label, fontsize=10)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def text_panel(text, title=None, width=88):
    """A generated text excerpt as a figure (monospace, wrapped)."""
    import textwrap
    plt = pyplot()
    lines = [w for line in str(text).splitlines() for w in (textwrap.wrap(line, width) or [""])]
    lines = lines[:30]
    fig = plt.figure(figsize=(8.5, 0.22 * len(lines) + 0.8))
    fig.text(0.01, 0.98, "\n".join(lines), family="monospace", fontsize=8, va="top")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def image_strip(frames, labels, title=None, vmin=None, vmax=None):
    """One column per frame (e.g. x_T ... x_0 of a reverse process): each frame (n, h, w), or
    flat rows (n, side*side), stacked top to bottom, with ``labels`` under the columns."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(frames), figsize=(1.1 * len(frames), 1.1 * len(frames[0])
                                                       / 1.6 + 0.6), squeeze=False)
    for ax, frame, label in zip(axes[0], frames, labels):
        ax.imshow(image_grid(frame, cols=1), cmap="gray_r", vmin=vmin, vmax=vmax,
                  interpolation="nearest")
        ax.set_xlabel(label, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def histogram_overlays(panels, bins=60, title=None, curve=None):
    """One panel per (label, {name: values}) pair, the named histograms overlaid (the first
    filled, the others as outlines); ``curve`` = (name, callable x -> pdf) is drawn on every
    panel."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.0), squeeze=False,
                             sharey=True)
    for ax, (label, series) in zip(axes[0], panels):
        for k, (name, values) in enumerate(series.items()):
            style = dict(alpha=0.5) if k == 0 else dict(histtype="step", lw=1.4)
            ax.hist(np.ravel(values), bins=bins, density=True, label=name, **style)
        if curve is not None:
            x = np.linspace(*ax.get_xlim(), 300)
            ax.plot(x, curve[1](x), "k--", lw=1, label=curve[0])
        ax.set_title(label, fontsize=10)
    axes[0][-1].legend(fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
