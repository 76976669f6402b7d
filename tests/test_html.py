"""The report's Markdown as one self-contained HTML page: each construct converted, figures
embedded, formulas as MathML, hostile text escaped."""

from __future__ import annotations

import base64

from pipeline import html


def test_every_construct_of_the_report_is_converted(tmp_path):
    png = b"\x89PNG\r\n\x1a\n fake"
    (tmp_path / "fig.png").write_bytes(png)
    md = "\n".join(["# Title `code`", "", "A paragraph", "on two lines with **bold**.", "",
                    "- one item", "- two |g|/|g0|", "", "| a | b \\| c |", "|---|---|", "| 1 | 2 |", "",
                    "    L = plain code", "    kappa = x / y", "", "![fig](fig.png)", "![gone](missing.png)", "",
                    "## Section"])
    page = html.convert(md, tmp_path, {"kappa = x / y": "<mi>&#x3BA;</mi>"})
    assert "<h1>Title <code>code</code></h1>" in page and "<h2>Section</h2>" in page
    assert "<p>A paragraph on two lines with <strong>bold</strong>.</p>" in page
    assert "<ul><li>one item</li><li>two |g|/|g0|</li></ul>" in page
    assert "<th>b | c</th>" in page and "<td>1</td><td>2</td>" in page and "---" not in page
    assert "<pre>L = plain code</pre>" in page
    assert '<math display="block" title="kappa = x / y"><mi>&#x3BA;</mi></math>' in page
    assert f'src="data:image/png;base64,{base64.b64encode(png).decode()}"' in page
    assert "figure missing.png missing" in page


def test_hostile_text_is_escaped_and_the_page_fetches_nothing(tmp_path):
    md = tmp_path / "report.md"
    md.write_text("# Case study: <script>alert(1)</script>\n\nrun `<img src=x onerror=alert(1)>`\n")
    out = html.write(md, tmp_path / "report.html", "Case study: <script>")
    page = out.read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page and "<img src=x" not in page
    assert "http://" not in page and "https://" not in page and page.startswith("<!doctype html>")
