"""A self-contained HTML report: tables and figures in one file (figures embedded as base64
PNG data, so the page opens in any browser with nothing beside it)."""
import base64
import html
import os
from typing import NamedTuple, Optional, Sequence, Tuple

from ..io import atomic_write

_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em}
td{text-align:right}td:first-child{text-align:left}figure{margin:1.5em 0}
img{max-width:100%}figcaption{color:#555}pre{background:#f6f6f6;padding:.8em;
white-space:pre-wrap}h3{font-size:1em;margin-bottom:.2em}"""


class Section(NamedTuple):
    """One part of the report: a heading, a note, a Markdown table, figures as (path, caption)
    and generated text as (label, [samples]), each sample in its own block."""
    heading: str
    table: Optional[str] = None
    figures: Sequence[Tuple[str, str]] = ()
    note: Optional[str] = None
    texts: Sequence[Tuple[str, Sequence[str]]] = ()


def markdown_table_to_html(text):
    """A Markdown table (header, rule, rows) as an HTML table."""
    rows = [line.strip().strip("|").split("|") for line in text.strip().splitlines()]
    head, body = rows[0], rows[2:]
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(c.strip())}</th>" for c in head)
           + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in row) + "</tr>"
            for row in body]
    return "\n".join(out + ["</table>"])


def write(path, title, sections):
    """The page for ``sections`` (a list of ``Section``), written atomically to ``path``."""
    parts = [f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}"
             f"</title><style>{_STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.heading)}</h2>")
        if section.note:
            parts.append(f"<p>{html.escape(section.note)}</p>")
        if section.table:
            parts.append(markdown_table_to_html(section.table))
        for fig, caption in section.figures:
            with open(fig, "rb") as f:
                data = base64.b64encode(f.read()).decode("ascii")
            name = html.escape(os.path.basename(fig))
            parts.append(f"<figure><img alt='{name}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        for label, samples in section.texts:
            parts.append(f"<h3>{html.escape(label)}</h3>"
                         + "".join(f"<pre>{html.escape(s)}</pre>" for s in samples))
    parts.append("</body></html>\n")
    atomic_write(path, lambda f: f.write("\n".join(parts).encode("utf-8")))
    return path
