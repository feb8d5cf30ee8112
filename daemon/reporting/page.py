"""One self-contained HTML page: sections of tables, notes and PNG charts embedded as base64.

No script, no stylesheet or font from elsewhere: the file opens the same
from a mail attachment, a CI artifact or a disk with no network. Every value
is escaped; cells carry ``data-field`` names so a test (or a script) can read
a figure back without scraping prose.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Cell", "Section", "render_page"]

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1100px; color: #222; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 8px 0; } td, th { padding: 3px 9px; border-bottom: 1px solid #eee; }
th { text-align: left; background: #f6f6f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pass { color: #1a7f37; font-weight: 600; } .fail { color: #b42318; font-weight: 600; }
.note { color: #555; font-style: italic; } img { max-width: 100%; display: block; margin: 8px 0; }
.verdict { font-weight: 600; margin: 6px 0; }
"""


@dataclass(frozen=True, slots=True)
class Cell:
    """A table cell: its text, the ``data-field`` it is read back by, and a CSS class."""

    text: str
    field: str = ""
    css: str = ""


@dataclass
class Section:
    """A heading and, in order, what goes under it."""

    title: str
    anchor: str
    parts: list[str] = field(default_factory=list)

    def note(self, text: str) -> Section:
        self.parts.append(f'<p class="note">{html.escape(text)}</p>')
        return self

    def line(self, text: str, css: str = "") -> Section:
        self.parts.append(f'<p class="{css}">{html.escape(text)}</p>' if css else f"<p>{html.escape(text)}</p>")
        return self

    def image(self, png: bytes, name: str, alt: str) -> Section:
        data = base64.b64encode(png).decode("ascii")
        self.parts.append(
            f'<img id="chart-{html.escape(name)}" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
        )
        return self

    def table(self, table_id: str, headers: Sequence[str], rows: Sequence[Sequence[Cell | str]]) -> Section:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
        self.parts.append(f'<table id="{html.escape(table_id)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
                          "</table>")
        return self


def _cell(cell: Cell | str) -> str:
    if isinstance(cell, str):
        cell = Cell(cell)
    attrs = ""
    if cell.field:
        attrs += f' data-field="{html.escape(cell.field)}"'
    if cell.css:
        attrs += f' class="{html.escape(cell.css)}"'
    return f"<td{attrs}>{html.escape(cell.text)}</td>"


def render_page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    toc = " · ".join(f'<a href="#{html.escape(s.anchor)}">{html.escape(s.title)}</a>' for s in sections)
    body = "".join(
        f'<section id="{html.escape(s.anchor)}"><h2>{html.escape(s.title)}</h2>{"".join(s.parts)}</section>'
        for s in sections
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p class=\"note\">{html.escape(subtitle)}</p><nav>{toc}</nav>{body}"
        "</body></html>\n"
    )
