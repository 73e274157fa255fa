"""One rule for the figure that shows samples, used by every command (sample, compare, demo):

    text (a str or a list of str)     an excerpt: the first sample of each panel
    rows of 64 values                 8x8 image grids (the digits' shape)
    rows of 1 value                   histograms
    anything else                     scatter plots of the first two columns

``panels`` is a list of (label, samples); when there are several, the first is the data and
image panels share its colour range (samples clipped into it), so every grid is drawn alike.
"""
import numpy as np

from ..data import sources

IMAGE_WIDTH = 64


def kind(samples):
    """'text', 'images', 'histogram' or 'scatter': how ``samples`` are drawn."""
    if isinstance(samples, str) or sources.is_text(samples):
        return "text"
    width = _width(samples)
    return "images" if width == IMAGE_WIDTH else "histogram" if width == 1 else "scatter"


def _width(samples):
    return int(np.prod(np.shape(samples)[1:]))


def _rows(samples):
    return np.asarray(samples, dtype=np.float64).reshape(len(samples), _width(samples))


def draw(plot, panels, title=None, per_panel=None):
    """The figure for ``panels`` by the rule above; ``per_panel`` caps the images (or text
    samples) drawn from each panel (all of them by default)."""
    how = kind(panels[0][1])
    if how == "text":
        texts = [[s] if isinstance(s, str) else list(s[:per_panel]) for _, s in panels]
        if len(panels) == 1:
            return plot.text_panel("\n\n".join(texts[0]), title)
        return plot.text_panel("\n\n".join(f"[{label}]\n{t[0]}" for (label, _), t
                                           in zip(panels, texts)), title)
    rows = [(label, _rows(s)) for label, s in panels]
    if how == "images":
        low, high = (None, None) if len(rows) == 1 else (rows[0][1].min(), rows[0][1].max())
        clip = (lambda v: v) if low is None else (lambda v: np.clip(v, low, high))
        return plot.image_panels([(label, clip(v[:per_panel])) for label, v in rows],
                                 vmin=low, vmax=high, title=title)
    if how == "histogram":
        return plot.histograms(rows, title=title)
    return plot.scatter_panels([(label, v[:, :2]) for label, v in rows], title=title)


def save(plot, panels, path, title=None, per_panel=None):
    """``draw`` the panels and write the figure to ``path``; returns the path."""
    return plot.save(draw(plot, panels, title, per_panel), path)
