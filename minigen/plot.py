"""Figures: samples next to the data, image grids, histograms, text excerpts.

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
    """A figure with n panels in rows of at most ``per_row``, the rows as even as they can be
    (8 panels: two rows of 4, not 5 + 3), so no row ends in a run of empty axes."""
    rows = -(-n // per_row)
    cols = -(-n // rows)
    fig, axes = pyplot().subplots(rows, cols, figsize=(width * cols, height * rows),
                                  squeeze=False)
    axes = list(axes.ravel())
    for ax in axes[n:]:
        ax.axis("off")
    return fig, axes[:n]


def grid_columns(n):
    """Columns of the squarest grid that holds n images: ceil(sqrt(n)) (64 -> 8 x 8)."""
    return max(1, int(np.ceil(np.sqrt(n))))


def image_panels(panels, cols=None, vmin=None, vmax=None, title=None):
    """One image grid per (label, images) pair (e.g. data | samples), five to a row; ``cols``
    images to a grid row (default: the squarest grid for the largest panel)."""
    cols = cols or grid_columns(max(len(images) for _, images in panels))
    fig, axes = _panel_axes(len(panels), 4.2, 4.4)
    for ax, (label, images) in zip(axes, panels):
        ax.imshow(image_grid(images, cols), cmap="gray_r", vmin=vmin, vmax=vmax,
                  interpolation="nearest")
        ax.set_title(label, fontsize=9)
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


def text_panel(text, title=None, width=88, max_lines=30):
    """A text excerpt as a figure (monospace, wrapped to ``width`` characters, at most
    ``max_lines`` lines); the title sits in its own band above the first line."""
    import textwrap
    plt = pyplot()
    lines = [w for line in str(text).splitlines() for w in (textwrap.wrap(line, width) or [""])]
    lines = lines[:max_lines]
    line_in, margin_in, title_in = 0.15, 0.2, 0.4 if title else 0.0
    height = line_in * max(1, len(lines)) + title_in + 2 * margin_in
    fig = plt.figure(figsize=(8.5, height))
    fig.text(0.01, 1 - (margin_in + title_in) / height, "\n".join(lines), family="monospace",
             fontsize=8, va="top", linespacing=1.25)
    if title:
        fig.suptitle(title, fontsize=10, y=1 - margin_in / height, va="top")
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


def moving_average(values, window):
    """The mean of each run of ``window`` consecutive values (len(values) - window + 1 of them;
    the values themselves when there are fewer than ``window``)."""
    values = np.asarray(values, dtype=np.float64)
    if window <= 1 or len(values) < window:
        return values
    sums = np.cumsum(np.concatenate([[0.0], values]))
    return (sums[window:] - sums[:-window]) / window


def training_curves(panels, title=None, smooth=50):
    """One panel per (label, {name: per-step values}, [(step, validation value)]): each named
    loss against the step, drawn as its moving average over len / ``smooth`` steps (a step's
    loss is one noisy batch), and the validation values as dots joined by a dashed line."""
    fig, axes = _panel_axes(len(panels), 3.6, 2.8, per_row=4)
    for ax, (label, history, validation) in zip(axes, panels):
        for name, values in history.items():
            window = max(1, len(values) // smooth)
            y = moving_average(values, window)
            ax.plot(np.arange(len(y)) + (window + 1) / 2, y, lw=1, label=name)
        if validation:
            steps, values = zip(*validation)
            ax.plot(steps, values, "k.--", lw=0.8, label="validation")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
