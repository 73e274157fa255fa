"""Markdown tables of fitted models: sample-quality rows for numeric data, held-out language
model scores for text. Each row is a ``Run`` result: (label, result dict, fit seconds). A
result may carry ``flags``, [(column, reason)] (see ``diagnose``): the flagged cell gets a
footnote marker [k] and the reason is printed under the table."""
import numpy as np


def _cell(value, fmt):
    return "-" if value is None or not np.isfinite(value) else format(value, fmt)


def _floor_cell(value, fmt):
    """The noise floor: one number, or its (mean, standard deviation) over several draws."""
    if isinstance(value, tuple):
        return f"{_cell(value[0], fmt)} +- {_cell(value[1], fmt)}"
    return _cell(value, fmt)


class Footnotes:
    """Numbers the flags of the rows in order and collects their lines."""

    def __init__(self):
        self.lines = []

    def mark(self, label, result, column, text):
        """``text`` with the markers of ``result``'s flags on ``column`` appended."""
        for where, reason in result.get("flags", ()):
            if where == column:
                self.lines.append(f"[{len(self.lines) + 1}] {label}: {reason}")
                text += f" [{len(self.lines)}]"
        return text

    def render(self, table):
        return table if not self.lines else "\n".join([table, ""] + self.lines)


def table(rows, reference=None, training=None):
    """Rows of (label, result, seconds) as a Markdown table; ``reference`` (the held-out data
    against training rows: its sliced W and MMD, each a number or (mean, sd)) is the noise
    floor, printed as the last row; ``training`` (the same for the training data the models
    saw) is printed above it: a model that copies its training points scores about that."""
    if rows and "bits_per_char" in rows[0][1]:
        return text_table(rows)
    notes = Footnotes()
    lines = ["| model | held-out log p (or bound) | sliced W | MMD | fit s |",
             "|---|---:|---:|---:|---:|"]
    for label, r, seconds in rows:
        cells = [notes.mark(label, r, "model", label), _cell(r["log_p"], ".3f"),
                 notes.mark(label, r, "sw", _cell(r["sw"], ".4f")),
                 notes.mark(label, r, "mmd", _cell(r["mmd"], ".4f")), f"{seconds:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if training is not None:
        lines.append(f"| (the training data itself) | - | {_cell(training['sw'], '.4f')} | "
                     f"{_cell(training['mmd'], '.4f')} | - |")
    if reference is not None:
        lines.append(f"| (held-out data itself) | - | {_floor_cell(reference['sw'], '.4f')} | "
                     f"{_floor_cell(reference['mmd'], '.4f')} | - |")
    return notes.render("\n".join(lines))


def text_table(rows):
    """Language models: held-out nats per token, bits per character, perplexity."""
    notes = Footnotes()
    lines = ["| model | held-out nats per token | bits per character | perplexity | fit s |",
             "|---|---:|---:|---:|---:|"]
    for label, r, seconds in rows:
        nats = None if r["log_p"] is None else -r["log_p"]
        lines.append(f"| {notes.mark(label, r, 'model', label)} | {_cell(nats, '.3f')} | "
                     f"{_cell(r['bits_per_char'], '.3f')} | {_cell(r['perplexity'], '.2f')} | "
                     f"{seconds:.1f} |")
    return notes.render("\n".join(lines))
