"""Real documents in, whole sentences out: PDFs typeset by fpdf2 (justified text with first-line indents,
spaced paragraphs, headings, a paragraph over a page break, page numbers) read back by the real pypdf, and
web pages with the chrome real sites have (a header with logo and menu, a nav of many links, a cookie
banner, an aside of related links, a footer), through extraction, chunking and `dset ingest`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fpdf import FPDF
from harness import clean_env, dset
from hypothesis import given, settings
from hypothesis import strategies as st

from dsetlog.catalog.chunking import STRATEGIES, chunk_text
from dsetlog.catalog.extract import ExtractError, extract_bytes, extract_text
from dsetlog.catalog.sentences import sentence_ends
from dsetlog.store.log import LOG_NAME
from projections.readmodel import ReadModel

ERUPTION = [
    "Mount St. Helens erupted in 1980. Dr. Smith measured the ash, e.g. its grain size, with a 3.5 mm sieve. "
    "The U.S. Geological Survey had warned of a bulge on the north flank for weeks before the blast.",
    "The lateral blast flattened forests over 600 square kilometres. Rivers filled with mud and debris. "
    "J. R. Harlow wrote the first report, No. 7 of the series, within a month.",
    "Ash fell across eleven states. In Yakima, 140 km away, street lights came on at noon. Farmers "
    "feared for their crops, but the ash proved a mild fertiliser in the years that followed.",
]
# longer than any chunk size used below: the windows inside it must end at its sentence ends
LONG = " ".join(
    f"Survey team {i} climbed to station {i} at dawn. They logged the tilt, e.g. {i}.5 microradians, and "
    f"sent it to Dr. Moore at the U.S. observatory by radio."
    for i in range(1, 21)
)
RECOVERY = [
    "Plants returned first to the pumice plain. Lupines fixed nitrogen, and insects followed them.",
    "Elk came back within five years. Prof. Dale counted their tracks along the Toutle River.",
]


class _NumberedPages(FPDF):
    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("helvetica", size=9)
        self.cell(0, 5, str(self.page_no()), align="C")


def typeset_pdf(path: Path) -> Path:
    """A report as a word processor sets it: a title, book-style paragraphs (justified, first lines
    indented, no space between them), a section heading, spaced left-aligned paragraphs, page numbers."""
    pdf = _NumberedPages()
    pdf.set_auto_page_break(True, margin=20)
    pdf.add_page()
    pdf.set_font("helvetica", "B", 20)
    pdf.multi_cell(0, 10, "The 1980 Eruption")
    pdf.ln(2)
    pdf.set_font("helvetica", size=11)
    with pdf.text_columns(text_align="J", line_height=1.5) as cols:
        for paragraph in [*ERUPTION, LONG, LONG]:
            with cols.paragraph(first_line_indent=8) as par:
                par.write(paragraph)
    pdf.ln(6)
    pdf.set_font("helvetica", "B", 15)
    pdf.multi_cell(0, 8, "Recovery")
    pdf.ln(2)
    pdf.set_font("helvetica", size=11)
    for paragraph in RECOVERY:
        pdf.multi_cell(0, 6, paragraph)
        pdf.ln(4)
    pdf.output(str(path))
    return path


PARAGRAPHS = [*ERUPTION, LONG, LONG, *RECOVERY]


def words(text: str) -> list[str]:
    return re.findall(r"\S+", text.replace("#", " "))


def test_pdf_paragraphs_and_headings_are_recovered_from_the_layout(tmp_path: Path) -> None:
    got = extract_text(typeset_pdf(tmp_path / "eruption.pdf"))
    assert got.pages == 2  # the sixth paragraph runs over the page break
    blocks = got.text.split("\n\n")
    assert blocks[0] == "# The 1980 Eruption" and "## Recovery" in blocks
    paragraphs = [" ".join(b.split()) for b in blocks if not b.startswith("#")]
    assert paragraphs == PARAGRAPHS  # each paragraph whole, the one over the page break joined again
    assert words(got.text) == words("The 1980 Eruption " + " ".join(PARAGRAPHS[:5]) + " Recovery "
                                    + " ".join(RECOVERY))  # nothing lost, nothing twice, no page number


def test_pdf_in_two_columns_keeps_a_paragraph_that_runs_into_the_next_column(tmp_path: Path) -> None:
    paragraphs = [f"Paragraph {i} begins here. " + "Its words fill a narrow column of text, e.g. this one. " * (9 + i)
                  for i in range(7)]  # fmt: skip
    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    pdf.add_page()
    with pdf.text_columns(ncols=2, text_align="J") as cols:
        for paragraph in paragraphs:
            with cols.paragraph(first_line_indent=6) as par:
                par.write(paragraph)
    pdf.output(str(tmp_path / "columns.pdf"))
    got = extract_text(tmp_path / "columns.pdf")
    assert got.pages == 1
    assert [" ".join(b.split()) for b in got.text.split("\n\n")] == [p.strip() for p in paragraphs]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_pdf_chunks_never_end_inside_a_sentence(tmp_path: Path, strategy: str) -> None:
    text = extract_text(typeset_pdf(tmp_path / "eruption.pdf")).text
    size, overlap = (60, 10) if strategy == "tokens" else (300, 0 if strategy == "paragraphs" else 80)
    chunks = chunk_text(text, strategy=strategy, chunk_size=size, overlap=overlap)
    ends = set(sentence_ends(text)) | {m.start() for m in re.finditer(r"\n\n", text)} | {len(text)}
    for chunk in chunks:
        assert chunk.end in ends, chunk.text  # a heading line ends at a blank line
        assert not re.search(r"(St|Dr|Prof|U\.S|e\.g|J|R|No)\.$", chunk.text), chunk.text
    assert any(len(c.text) > 200 for c in chunks if "Survey team" in c.text)  # windows were needed, and filled
    if overlap == 0:  # without overlap the chunks are the text, in order, once
        assert words(" ".join(c.text for c in chunks)) == words(text)


def test_pdf_ingested_by_the_cli_gives_whole_paragraph_chunks(tmp_path: Path) -> None:
    data = tmp_path / "data"
    pdf = typeset_pdf(tmp_path / "eruption.pdf")
    page = tmp_path / "article.html"
    page.write_text(ARTICLE_PAGE, encoding="utf-8")
    env = clean_env(DSET_DATA_DIR=str(data))
    args = ["ingest", str(pdf), str(page), "--project", "volcano", "--strategy", "paragraphs", "--chunk-size", "400",
            "--overlap", "0"]
    proc = dset(args, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rm = ReadModel.open(data)
    project = rm.projects.project_by_name("volcano")
    assert project is not None
    by_name = {d.filename: d for d in rm.projects.documents(project.id)}
    pdf_chunks = [rm.projects.chunk(cid) for cid in by_name["eruption.pdf"].chunk_ids]
    texts = [" ".join(c.text.split()) for c in pdf_chunks if c is not None]
    for paragraph in ERUPTION + RECOVERY:  # short paragraphs: each inside one chunk, never split
        assert any(paragraph in t for t in texts), paragraph
    for text in texts:
        assert text.endswith((".", "Eruption", "Recovery")), text
    html_chunks = [rm.projects.chunk(cid) for cid in by_name["article.html"].chunk_ids]
    html_text = "\n\n".join(c.text for c in html_chunks if c is not None)
    for gone in CHROME:
        assert gone not in html_text
    for kept in ARTICLE_KEPT:
        assert kept in html_text

    size = (data / LOG_NAME).stat().st_size
    again = dset(args, cwd=tmp_path, env=env)  # the same content and chunking: nothing written
    assert again.returncode == 0 and again.stdout.count(": unchanged (") == 2, again.stdout
    assert (data / LOG_NAME).stat().st_size == size


# --- web pages ------------------------------------------------------------------------------------

ARTICLE_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Mount St. Helens | Example site</title>
<link rel="stylesheet" href="/site.css"><script>window.dataLayer = [];</script></head>
<body class="post-template sidebar-layout">
<a class="skip-link screen-reader-text" href="#content">Skip to content</a>
<div id="cookie-banner" class="cc-window" role="dialog" aria-label="cookieconsent">
  <p>We use cookies to improve your experience. <a href="/privacy">Learn more</a></p>
  <button>Accept all</button><button>Reject</button>
</div>
<header class="site-header">
  <a class="logo" href="/"><img src="/logo.svg" alt="Example site"> Example site</a>
  <ul class="menu"><li><a href="/">Home</a></li><li><a href="/news">News</a></li><li><a href="/about">About us</a></li></ul>
  <form role="search" action="/search"><label>Search this site <input name="q"></label><button>Go</button></form>
</header>
<nav aria-label="Main"><ul>
  <li><a href="/volcanoes">Volcanoes</a></li><li><a href="/earthquakes">Earthquakes</a></li>
  <li><a href="/floods">Floods</a></li><li><a href="/wildfires">Wildfires</a></li><li><a href="/maps">Maps</a></li>
</ul></nav>
<div class="wrapper">
<main id="content">
  <article class="post">
    <header class="entry-header"><h1>Mount St. Helens, forty years on</h1>
      <p class="byline">By Dr. Ana Reyes, 18 May 2020</p></header>
    <nav class="breadcrumbs"><a href="/">Home</a> &rsaquo; <a href="/volcanoes">Volcanoes</a></nav>
    <p>Mount St. Helens erupted on 18 May 1980. The blast removed 400 m of the summit.</p>
    <h2>What the survey measured</h2>
    <ul><li>Tilt on the north flank</li><li>Sulphur dioxide at the crater</li><li>Earthquakes under the dome</li></ul>
    <table><tr><th>Year</th><th>Dome height</th></tr><tr><td>1981</td><td>150 m</td></tr><tr><td>1986</td><td>267 m</td></tr></table>
    <pre><code><span class="kw">tilt</span> = read_station("NF-2")

if tilt &gt; 2.5:
    warn()</code></pre>
    <p>Read the <a href="/report.pdf">full report</a> for the station data.</p>
    <div class="share-buttons"><a href="https://x.com/share">Share on X</a> <a href="https://facebook.com/share">Facebook</a></div>
    <footer class="entry-footer">Filed under <a href="/tag/volcanoes">volcanoes</a>, <a href="/tag/usgs">USGS</a></footer>
  </article>
  <aside class="related-posts"><h3>Related posts</h3><ul><li><a href="/a">Krakatoa</a></li><li><a href="/b">Pinatubo</a></li></ul></aside>
</main>
<aside id="sidebar"><h3>Popular</h3><ul><li><a href="/p1">Top ten volcanoes</a></li><li><a href="/p2">Lava myths</a></li></ul></aside>
</div>
<footer class="site-footer"><p>(c) 2024 Example site</p><p><a href="/privacy">Privacy</a> | <a href="/terms">Terms</a></p></footer>
</body></html>
"""
CHROME = ["Skip to content", "cookies", "Accept all", "Example site", "Home", "About us", "Search this site",
          "Earthquakes</a>", "Wildfires", "Share on X", "Related posts", "Krakatoa", "Popular", "Lava myths",
          "(c) 2024", "Privacy", "Terms", "Filed under"]
ARTICLE_KEPT = ["# Mount St. Helens, forty years on", "By Dr. Ana Reyes, 18 May 2020",
                "Mount St. Helens erupted on 18 May 1980. The blast removed 400 m of the summit.",
                "## What the survey measured", "Read the full report for the station data."]
ARTICLE_TEXT = """# Mount St. Helens, forty years on

By Dr. Ana Reyes, 18 May 2020

Mount St. Helens erupted on 18 May 1980. The blast removed 400 m of the summit.

## What the survey measured

- Tilt on the north flank
- Sulphur dioxide at the crater
- Earthquakes under the dome

Year | Dome height
1981 | 150 m
1986 | 267 m

```
tilt = read_station("NF-2")

if tilt > 2.5:
    warn()
```

Read the full report for the station data."""


def test_a_real_pages_chrome_is_gone_and_its_article_whole(tmp_path: Path) -> None:
    (tmp_path / "article.html").write_text(ARTICLE_PAGE, encoding="utf-8")
    assert extract_text(tmp_path / "article.html").text == ARTICLE_TEXT


# an older layout: no <main>, no <article>; the chrome is named by classes and roles, and one box is only links
DIV_PAGE = """<html><head><title>Harbour notes</title></head><body>
<div id="top" role="banner"><span class="site-title"><a href="/">Harbour Board</a></span></div>
<div class="navbar"><a href="/">Home</a> <a href="/tides">Tides</a> <a href="/ships">Ships</a></div>
<div class="content">
<h1>Tide tables for small craft</h1>
<p>High water at the bar comes 40 min. after high water at the quay. Check the table, e.g. for spring tides.</p>
<p>Keep clear of the dredger. See <a href="/notice-12">Notice No. 12</a> for its berth.</p>
</div>
<div class="box"><a href="/1">Moorings</a> <a href="/2">Fuel</a> <a href="/3">Chandlery</a> <a href="/4">Weather</a></div>
<div class="gdpr-notice"><p>This site stores data in your browser.</p></div>
<div role="contentinfo"><p>(c) 2024 Example site</p></div>
<div hidden><p>Newsletter pop-up text</p></div>
</body></html>"""


def test_a_page_without_main_loses_named_chrome_and_link_boxes(tmp_path: Path) -> None:
    (tmp_path / "harbour.html").write_text(DIV_PAGE, encoding="utf-8")
    assert extract_text(tmp_path / "harbour.html").text == (
        "# Tide tables for small craft\n\n"
        "High water at the bar comes 40 min. after high water at the quay. Check the table, e.g. for spring tides.\n\n"
        "Keep clear of the dredger. See Notice No. 12 for its berth."
    )


def test_cards_marked_article_do_not_hide_the_main_text(tmp_path: Path) -> None:
    """<article> cards in a sidebar hold little of the text: the rest of the page is not dropped for them."""
    page = ("<body><div class='post'><h1>Notes</h1><p>" + "A long paragraph of real content. " * 12 + "</p></div>"
            "<div class='cards'><article><h3>Card one</h3><p>Teaser.</p></article></div></body>")
    (tmp_path / "cards.html").write_text(page, encoding="utf-8")
    text = extract_text(tmp_path / "cards.html").text
    assert text.startswith("# Notes\n\nA long paragraph of real content.") and "### Card one" in text


def test_a_wrapper_named_like_chrome_keeps_the_title_and_text_it_holds(tmp_path: Path) -> None:
    """Names are hints: a body or a layout wrapper called "sidebar" that holds the page's <h1> stays, and a
    blog's title in a page <header> (no <article>) is kept while the site's linked name is not."""
    page = ("<body class='has-sidebar'><header class='site-header'><p class='site-title'><a href='/'>Example "
            "site</a></p></header><div class='layout-sidebar-right'><header class='entry-header'><h1>Tide "
            "notes</h1></header><p>The bar is shallow at low water.</p></div><div class='sidebar'><h3>Archive"
            "</h3><p>May</p></div></body>")
    (tmp_path / "blog.html").write_text(page, encoding="utf-8")
    assert extract_text(tmp_path / "blog.html").text == "# Tide notes\n\nThe bar is shallow at low water."


def test_a_page_of_navigation_only_is_refused_saying_so(tmp_path: Path) -> None:
    (tmp_path / "toc.html").write_text("<body class='sidebar-iframe-inner'><ol class='chapter'>" + "".join(
        f"<li><a href='/{i}.html'>{i}. Chapter {i}</a></li>" for i in range(1, 9)) + "</ol></body>", encoding="utf-8")
    with pytest.raises(ExtractError, match="only site navigation"):
        extract_text(tmp_path / "toc.html")


def test_markup_inside_pre_keeps_the_code_as_one_block(tmp_path: Path) -> None:
    """rustdoc's signatures: <pre> holding spans and a <div> for the where-clause, shown on its own line."""
    page = ('<main><pre class="rust item-decl"><code>pub struct <span class="struct">Vec</span>&lt;T&gt;'
            '<div class="where">where\n    T: Copy,</div>{ /* private fields */ }</code></pre></main>')
    (tmp_path / "vec.html").write_text(page, encoding="utf-8")
    assert extract_text(tmp_path / "vec.html").text == (
        "```\npub struct Vec<T>\nwhere\n    T: Copy,\n{ /* private fields */ }\n```"
    )


def test_a_page_with_rotated_text_keeps_pypdfs_plain_text(tmp_path: Path) -> None:
    """Positions of rotated text are not a page's lines: such a page is read as pypdf reads it, nothing lost."""
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    pdf.add_page()
    pdf.multi_cell(0, 8, "An upright sentence. Another one follows it.")
    with pdf.rotation(90, x=100, y=200):
        pdf.text(100, 200, "Sideways label")
    pdf.output(str(tmp_path / "rotated.pdf"))
    from pypdf import PdfReader

    plain = PdfReader(str(tmp_path / "rotated.pdf")).pages[0].extract_text().strip()
    got = extract_text(tmp_path / "rotated.pdf").text
    assert got == plain and "Sideways label" in got and "An upright sentence." in got


TAGS = ["div", "p", "nav", "main", "article", "header", "footer", "aside", "ul", "li", "a", "pre", "table", "tr",
        "td", "h1", "h2", "span", "form", "button", "script", "br", "section", "dialog"]
ATTRS = ["", " class='cookie-banner'", " hidden", " role='main'", " class='sidebar'", " href='#x'", " aria-hidden='true'"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    st.tuples(st.sampled_from(["<", "</"]), st.sampled_from(TAGS), st.sampled_from(ATTRS)).map(
        lambda t: f"{t[0]}{t[1]}{t[2] if t[0] == '<' else ''}>"),
    st.sampled_from(["Some text. ", "Skip to content", "(c) 2024", "\n\n", "  ", "&amp; more"]),
), max_size=60))
def test_any_tag_soup_extracts_or_refuses_cleanly(pieces: list[str]) -> None:
    """Unclosed, stray and misnested tags never raise anything but the clear refusals."""
    try:
        text = extract_bytes("".join(pieces).encode(), "soup.html").text
    except ExtractError as exc:
        assert "no text" in str(exc) or "only site navigation" in str(exc)
    else:  # a <pre> comes out fenced and verbatim, its blank lines too; elsewhere blocks are one blank line apart
        assert text.strip() and "\n\n\n" not in re.sub(r"```\n.*?\n```", "```", text, flags=re.DOTALL)


def test_a_page_of_a_few_spaced_lines_goes_by_the_documents_line_pitch(tmp_path: Path) -> None:
    """Page two has only paragraph gaps, no line pitch of its own to compare them with: page one's is used."""
    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    pdf.add_page()
    pdf.multi_cell(0, 6, "Survey notes were kept daily. " * 40)
    pdf.add_page()
    for note in ("First short note.", "Second short note.", "Third short note."):
        pdf.multi_cell(0, 6, note)
        pdf.ln(4)
    pdf.output(str(tmp_path / "sparse.pdf"))
    blocks = extract_text(tmp_path / "sparse.pdf").text.split("\n\n")
    assert blocks[1:] == ["First short note.", "Second short note.", "Third short note."]


def test_a_sections_own_header_is_kept(tmp_path: Path) -> None:
    page = ("<body><header><a href='/'>Example site</a></header><section><header><h2>Opening hours</h2>"
            "</header><p>Open daily from 9 a.m. to 5 p.m.</p></section></body>")
    (tmp_path / "hours.html").write_text(page, encoding="utf-8")
    assert extract_text(tmp_path / "hours.html").text == "## Opening hours\n\nOpen daily from 9 a.m. to 5 p.m."


def test_a_content_section_whose_heading_is_links_is_kept(tmp_path: Path) -> None:
    """rustdoc: every item section in <main> is a source link, a permalink and a heading made of links."""
    section = ('<section id="associatedtype.Error"><a class="src" href="../src/x.rs.html">Source</a>'
               '<a href="#associatedtype.Error" class="anchor">§</a><h4 class="code-header">type '
               '<a href="trait.TryFrom.html">Error</a> = <a href="enum.Infallible.html">Infallible</a></h4></section>')
    page = f"<body><main>{section}<div class='docblock'>The type returned on a conversion error.</div></main></body>"
    (tmp_path / "item.html").write_text(page, encoding="utf-8")
    assert extract_text(tmp_path / "item.html").text == (
        "Source§\n\n#### type Error = Infallible\n\nThe type returned on a conversion error."
    )


class _Report(FPDF):
    """A report with a running head (its title, and the chapter on the right) and "Page n of m" feet."""

    def header(self) -> None:
        self.set_font("helvetica", "I", 9)
        self.cell(0, 5, "Cascades Volcano Report", align="L")
        self.cell(0, 5, f"Chapter {1 + self.page_no() // 3}", align="R")
        self.ln(12)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("helvetica", size=9)
        self.cell(0, 5, f"Page {self.page_no()} of {{nb}}", align="C")


def test_running_heads_and_feet_are_left_out_and_paragraphs_run_on_under_them(tmp_path: Path) -> None:
    pdf = _Report()
    pdf.set_auto_page_break(True, margin=20)
    pdf.add_page()
    items = [f"Station {i} logged the tilt of the north flank, e.g. {i}.5 microradians, every hour." for i in range(4)]
    for item in items:  # bullets set in a smaller font than their text, as word processors do
        pdf.set_font("helvetica", size=8)
        pdf.write(6, "- ")  # helvetica has no bullet glyph
        pdf.set_font("helvetica", size=11)
        pdf.write(6, item)
        pdf.ln(8)
    pdf.set_font("helvetica", size=11)
    for paragraph in (LONG, LONG, LONG):
        pdf.multi_cell(0, 6, paragraph)
        pdf.ln(4)
    pdf.output(str(tmp_path / "report.pdf"))
    got = extract_text(tmp_path / "report.pdf")
    assert got.pages >= 3  # a running head is one on three pages or more
    assert "Cascades Volcano Report" not in got.text and "Chapter" not in got.text and "Page " not in got.text
    blocks = [" ".join(b.split()) for b in got.text.split("\n\n")]
    assert blocks == [f"- {item}" for item in items] + [LONG, LONG, LONG]
