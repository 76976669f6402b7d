"""A report's Markdown as one self-contained HTML file: figures embedded, formulas typeset.

The report's Markdown uses a small subset (headings, paragraphs, ``-`` lists, pipe tables,
indented code blocks, images, inline code and bold), converted here line by line; nothing is
fetched when the page opens (MLflow's artifact viewer shows it in a sandboxed frame, offline):
every image is a ``data:`` URI and every formula MathML, which browsers typeset natively. A code
line that is one of the ``formulas`` given (plain text -> MathML) is shown as that formula, its
plain text kept as the element's title.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

STYLE = """body{font-family:system-ui,sans-serif;max-width:76rem;margin:2rem auto;padding:0 1rem;line-height:1.45;color:#222}
table{border-collapse:collapse;font-size:.85rem;margin:.6rem 0}th,td{border:1px solid #ccc;padding:.2rem .45rem}
th{background:#f3f3f3}td{text-align:right}td:first-child,td:last-child{text-align:left}
pre{background:#f6f6f6;padding:.5rem;overflow-x:auto}code{background:#f3f3f3;padding:0 .2rem}
img{max-width:100%;border:1px solid #eee}math[display=block]{margin:.4rem 0 .4rem 1.5rem}"""


def _inline(text: str) -> str:
    """Escape, then inline code and bold."""
    out = []
    for j, part in enumerate(re.split(r"(`[^`]*`)", text)):
        if j % 2:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
        else:
            out.append(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(part)))
    return "".join(out)


def _cells(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip().strip("|")) if line.strip() != "|" else []
    return [c.strip().replace("\\|", "|") for c in cells]


def _image(match: re.Match, folder: Path) -> str:
    alt, name = match.group(1), match.group(2)
    path = folder / name
    if not path.is_file():
        return f"<p><em>figure {html.escape(name)} missing</em></p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def convert(markdown: str, folder: Path, formulas: dict[str, str] | None = None) -> str:
    """The body's HTML for ``markdown`` (images read from ``folder``)."""
    formulas = formulas or {}
    out: list[str] = []
    lines = markdown.splitlines()
    j = 0
    while j < len(lines):
        line = lines[j]
        if not line.strip():
            j += 1
            continue
        if (m := re.match(r"^(#{1,4}) (.*)$", line)):
            level = len(m.group(1))
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
            j += 1
        elif (m := re.fullmatch(r"!\[([^\]]*)\]\(([^)]+)\)", line.strip())):
            out.append(_image(m, folder))
            j += 1
        elif line.startswith("    "):
            block = []
            while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                block.append(lines[j][4:])
                j += 1
            while block and not block[-1].strip():
                block.pop()
            text = []
            for code in block:
                if code.strip() in formulas:
                    if text:
                        out.append(f"<pre>{html.escape(chr(10).join(text))}</pre>")
                        text = []
                    out.append(f'<math display="block" title="{html.escape(code.strip())}">{formulas[code.strip()]}</math>')
                else:
                    text.append(code)
            if text:
                out.append(f"<pre>{html.escape(chr(10).join(text))}</pre>")
        elif line.startswith("|"):
            rows = []
            while j < len(lines) and lines[j].startswith("|"):
                rows.append(_cells(lines[j]))
                j += 1
            body = [r for r in rows[1:] if not all(re.fullmatch(r":?-{3,}:?", c) for c in r)]
            out.append("<table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in rows[0]) + "</tr></thead><tbody>"
                       + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body)
                       + "</tbody></table>")
        elif line.startswith("- "):
            items = []
            while j < len(lines) and lines[j].startswith("- "):
                items.append(lines[j][2:])
                j += 1
                while j < len(lines) and lines[j].startswith("  ") and not lines[j].startswith("    "):
                    items[-1] += " " + lines[j].strip()
                    j += 1
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
        else:
            para = [line]
            j += 1
            while j < len(lines) and lines[j].strip() and not re.match(r"^(#{1,4} |- |\||    |!\[)", lines[j]):
                para.append(lines[j])
                j += 1
            out.append(f"<p>{_inline(' '.join(para))}</p>")
    return "\n".join(out)


def write(markdown_path: Path, out: Path, title: str, formulas: dict[str, str] | None = None) -> Path:
    """``out``: the Markdown file at ``markdown_path`` as one self-contained HTML page."""
    markdown_path = Path(markdown_path)
    body = convert(markdown_path.read_text(), markdown_path.parent, formulas)
    out = Path(out)
    out.write_text(f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
                   f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")
    return out
