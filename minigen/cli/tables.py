"""Markdown tables of fitted models: sample-quality rows for numeric data, held-out language
model scores for text. Each row is a ``Run`` result: (label, result dict, fit seconds)."""
import numpy as np


def _cell(value, fmt):
    return "-" if value is None or not np.isfinite(value) else format(value, fmt)


def table(rows, reference=None):
    """Rows of (label, result, seconds) as a Markdown table; ``reference`` (the held-out data
    against itself: its sliced W and MMD) is the noise floor, printed as the last row."""
    if rows and "bits_per_char" in rows[0][1]:
        return text_table(rows)
    lines = ["| model | held-out log p (or bound) | sliced W | MMD | fit s |",
             "|---|---:|---:|---:|---:|"]
    for label, r, seconds in rows:
        lines.append(f"| {label} | {_cell(r['log_p'], '.3f')} | {_cell(r['sw'], '.4f')} | "
                     f"{_cell(r['mmd'], '.4f')} | {seconds:.1f} |")
    if reference is not None:
        lines.append(f"| (held-out data itself) | - | {_cell(reference['sw'], '.4f')} | "
                     f"{_cell(reference['mmd'], '.4f')} | - |")
    return "\n".join(lines)


def text_table(rows):
    """Language models: held-out nats per token, bits per character, perplexity."""
    lines = ["| model | held-out nats per token | bits per character | perplexity | fit s |",
             "|---|---:|---:|---:|---:|"]
    for label, r, seconds in rows:
        lines.append(f"| {label} | {-r['log_p']:.3f} | {_cell(r['bits_per_char'], '.3f')} | "
                     f"{r['perplexity']:.2f} | {seconds:.1f} |")
    return "\n".join(lines)
