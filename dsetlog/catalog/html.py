"""A web page's content as text, without the site around it (the stdlib's html.parser, streaming).

Visible text becomes blocks: headings as markdown ``#`` lines, paragraphs, list items and table rows (the
items of a list and the rows of a table on adjacent lines, so each reads as one paragraph), ``<pre>`` as a
fenced code block kept verbatim. Blocks are separated by blank lines.

What is a site's and not the page's is left out:

- never content: ``script``, ``style``, ``noscript``, ``template``, ``svg``, ``iframe``, form controls, and
  elements marked ``hidden`` or ``aria-hidden="true"``; skip links ("Skip to content");
- navigation wherever it is: ``<nav>``, ``<dialog>``, ``<footer>`` (an article's footer holds its tags,
  share links and author box), ``role="navigation"`` or ``"search"``, and elements
  whose class, id or aria-label name a cookie or consent banner (cookie, consent, gdpr) or other chrome
  (breadcrumbs, menu, sidebar, share, social, related, newsletter, subscribe, advert, promo, skip, ...);
- the page's own header and asides: ``<header>`` (outside any ``<section>``, ``<article>``, ``<aside>``,
  ``<main>``: where ARIA calls it the page's banner), ``<aside>``, ``<form>``, their roles (banner,
  contentinfo, complementary) and class names (header, footer, banner, masthead), unless they are inside
  ``<main>`` or ``<article>`` (an article's header holds its title);
- blocks that are mostly links (at least two links, over half of the text; inside ``<main>``/``<article>``
  three quarters, and not a block with a heading of its own): link lists, tag clouds, "related" boxes
  without a name;
- once the page has a ``<main>`` (or ``role="main"``), or ``<article>`` elements that hold most of its text,
  whatever lies outside them, except an ``<h1>`` that is not a link (a title set above the article).

The judgement on an element is made when it closes, on what it turned out to hold: ``<body>`` and an element
holding ``<main>`` or ``<article>`` are never dropped, nor one dropped for its name alone that holds the
page's ``<h1>`` (a wrapper named "has-sidebar" around the title and the text); a page header that is dropped
keeps its ``<h1>`` when that is not a link (a blog's title above its text; a site's name links home).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

SKIPPED_TAGS = frozenset(
    {"script", "style", "noscript", "template", "head", "svg", "iframe", "canvas", "object", "button", "select",
     "textarea", "datalist"}
)  # fmt: skip
VOID_TAGS = frozenset({"br", "hr", "img", "input", "meta", "link", "area", "base", "col", "embed", "source", "wbr"})
BLOCK_TAGS = frozenset(
    {
        "p", "div", "section", "article", "main", "header", "footer", "aside", "blockquote", "pre",
        "ul", "ol", "dl", "dt", "dd", "table", "tr", "figure", "figcaption", "form", "fieldset",
        "address", "details", "summary", "body", "html", "nav", "dialog", "menu", "li",
        "h1", "h2", "h3", "h4", "h5", "h6",
    }
)  # fmt: skip
HEADING_LEVELS = {f"h{level}": level for level in range(1, 7)}
_ALWAYS_CHROME_TAGS = frozenset({"nav", "dialog", "menu", "footer"})  # an article's footer: tags, share, bio
_PAGE_CHROME_TAGS = frozenset({"header", "aside", "form"})
_ALWAYS_CHROME_ROLES = frozenset({"navigation", "search", "menubar", "menu", "toolbar"})
_PAGE_CHROME_ROLES = frozenset({"banner", "contentinfo", "complementary"})
_CONSENT_NAMES = ("cookie", "consent", "gdpr")  # matched inside any name: "cookieBanner", "cc-consent"
_CHROME_WORDS = frozenset(
    """breadcrumb breadcrumbs menu navbar nav navigation sidebar share sharing social related newsletter
    subscribe subscription advert advertisement ads sponsored promo skip skiplink toolbar pagination pager
    widget""".split()
)
_PAGE_CHROME_WORDS = frozenset("header footer banner masthead topbar".split())
_SECTIONING = frozenset({"article", "aside", "main", "nav", "section"})
_LINK_DENSITY = 0.5
_LINK_DENSITY_IN_MAIN = 0.75
_SKIP_LINK_RE = re.compile(r"\s*skip\b", re.IGNORECASE)


class _Block:
    __slots__ = ("text", "kind", "in_main", "link_chars")

    def __init__(self, text: str, kind: str, in_main: bool, link_chars: int) -> None:
        self.text, self.kind, self.in_main, self.link_chars = text, kind, in_main, link_chars


class _Frame:
    """An open element whose text is held until it closes, when it is judged content or chrome."""

    __slots__ = ("tag", "blocks", "chars", "link_chars", "links", "chrome", "by_name", "page_chrome", "is_main",
                 "has_main", "has_h1", "has_heading")

    def __init__(self, tag: str, *, chrome: bool = False, by_name: bool = False, page_chrome: bool = False,
                 is_main: bool = False) -> None:
        self.tag, self.chrome, self.by_name, self.page_chrome = tag, chrome, by_name, page_chrome
        self.is_main = is_main
        self.blocks: list[_Block] = []
        self.chars = self.link_chars = self.links = 0
        self.has_main = self.has_h1 = self.has_heading = False


class HTMLText(HTMLParser):
    """Feed it a page, close it, and read :meth:`text`."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)  # entities (&amp;, &#8217;) decoded for us
        self._frames = [_Frame("#document")]
        self._parts: list[str] = []
        self._part_link_chars = 0
        self._kind, self._prefix = "p", ""
        self._skip: list[str] = []  # the tags of the skipped elements we are in
        self._pre = 0
        self._links: list[tuple[int, bool]] = []  # per open <a>: (where its text starts in _parts, in-page href)
        self._saw_main = False
        self._article_chars = 0
        self.visible_chars = 0  # of text outside script, style, hidden elements: what the page shows

    # --- the parser's callbacks ------------------------------------------------------------------

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip:
            if tag == "body" and "head" in self._skip:
                self._skip.clear()  # </head> may be left out
            elif tag == self._skip[-1] and tag not in VOID_TAGS:
                self._skip.append(tag)
                return
            else:
                return
        named = dict(attrs)
        if tag in SKIPPED_TAGS or "hidden" in named or (named.get("aria-hidden") or "").lower() == "true":
            if tag not in VOID_TAGS:
                self._skip.append(tag)
            return
        if tag == "br":
            self._parts.append("\n")
        elif tag in ("td", "th"):
            if "".join(self._parts).strip():  # cells of one row stay on one line, as in a markdown table
                self._parts.append(" | ")
        if self._pre and tag != "pre":  # a <pre> is one block, whatever its markup (rustdoc's where-clauses
            self._pre_line_break(tag)   # are <div>s): a block inside it only starts a line, as browsers show it
        elif tag in BLOCK_TAGS or _chrome_of(tag, named) != (False, False):
            self._open(tag, named)
        if tag == "a":  # after _open: a link that is an element of its own starts its own text
            self._links.append((len(self._parts), (named.get("href") or "").startswith("#")))
            self._frames[-1].links += 1

    def handle_endtag(self, tag: str) -> None:
        if self._skip:
            if tag == self._skip[-1]:
                self._skip.pop()
            return
        if tag == "a" and self._links:
            self._end_link()
        if self._pre and tag != "pre":
            self._pre_line_break(tag)
            return
        for depth in range(len(self._frames) - 1, 0, -1):
            if self._frames[depth].tag == tag:
                while len(self._frames) > depth:
                    self._close_frame()
                return

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        text = data if self._pre else re.sub(r"\s+", " ", data)
        self._parts.append(text)
        chars = len(text.strip())
        self.visible_chars += chars
        self._frames[-1].chars += chars
        if self._links:
            self._part_link_chars += chars
            self._frames[-1].link_chars += chars

    def close(self) -> None:
        super().close()
        while len(self._frames) > 1:
            self._close_frame()
        self._flush()

    # --- elements ----------------------------------------------------------------------------------

    def _open(self, tag: str, named: dict[str, str | None]) -> None:
        self._flush()
        chrome, page_chrome = _chrome_of(tag, named)
        by_name = chrome and not (tag in _ALWAYS_CHROME_TAGS or _consent(named) or _role(named) in _ALWAYS_CHROME_ROLES)
        is_main = tag in ("main", "article") or (named.get("role") or "").lower() in ("main", "article")
        self._saw_main = self._saw_main or tag == "main" or (named.get("role") or "").lower() == "main"
        self._frames.append(_Frame(tag, chrome=chrome, by_name=by_name, page_chrome=page_chrome, is_main=is_main))
        if tag in HEADING_LEVELS:
            self._kind, self._prefix = "heading", "#" * HEADING_LEVELS[tag] + " "
        elif tag == "li":
            self._kind, self._prefix = "item", "- "
        elif tag == "tr":
            self._kind = "row"
        elif tag == "pre":
            self._pre += 1
            self._kind = "pre"

    def _close_frame(self) -> None:
        self._flush()
        closing_pre = self._frames[-1].tag == "pre"
        self._kind, self._prefix = ("pre" if self._pre and not closing_pre else "p"), ""
        frame = self._frames.pop()
        parent = self._frames[-1]
        if closing_pre:
            self._pre = max(0, self._pre - 1)
        parent.has_main = parent.has_main or frame.has_main or frame.is_main
        parent.has_h1 = parent.has_h1 or frame.has_h1 or frame.tag == "h1"
        parent.has_heading = parent.has_heading or frame.has_heading or frame.tag in HEADING_LEVELS
        if self._is_chrome(frame):
            if frame.page_chrome and not frame.chrome:  # a page's header may hold the page's title
                parent.blocks.extend(b for b in frame.blocks if _title(b))
            return
        parent.blocks.extend(frame.blocks)
        parent.chars += frame.chars
        parent.link_chars += frame.link_chars
        parent.links += frame.links
        if frame.tag == "article" and not any(f.is_main for f in self._frames):
            self._article_chars += frame.chars

    def _is_chrome(self, frame: _Frame) -> bool:
        if frame.is_main or frame.has_main or frame.tag in ("body", "html"):
            return False
        if frame.chrome:
            return not (frame.by_name and frame.has_h1)  # a wrapper named "has-sidebar" around the title and text
        in_main = any(f.is_main for f in self._frames)
        if frame.page_chrome and not in_main:
            # a <header> is the page's only outside sectioning content, as ARIA maps it to "banner"
            return frame.tag != "header" or not any(f.tag in _SECTIONING for f in self._frames)
        if frame.links < 2 or not frame.chars or frame.tag in HEADING_LEVELS or frame.tag == "li":
            return False
        if in_main and frame.has_heading:
            return False  # a section of the content with its own heading (rustdoc's, whose headings are links)
        return frame.link_chars / frame.chars > (_LINK_DENSITY_IN_MAIN if in_main else _LINK_DENSITY)

    def _pre_line_break(self, tag: str) -> None:
        if tag in BLOCK_TAGS and self._parts and not self._parts[-1].endswith("\n"):
            self._parts.append("\n")

    def _end_link(self) -> None:
        start, in_page = self._links.pop()
        if in_page and _SKIP_LINK_RE.match("".join(self._parts[start:])):
            skipped = len("".join(self._parts[start:]).strip())
            del self._parts[start:]  # "Skip to content": a link for keyboards, not text
            self._part_link_chars -= skipped
            self._frames[-1].chars -= skipped
            self._frames[-1].link_chars -= skipped

    def _flush(self) -> None:
        raw = "".join(self._parts)
        self._parts = []
        self._links = [(0, in_page) for _, in_page in self._links]  # an open link's text now starts the parts
        if self._pre:
            text = raw.strip("\n").rstrip()
            text = f"```\n{text}\n```" if text.strip() else ""
        else:
            lines = [line.strip() for line in raw.split("\n")]
            text = "\n".join(line for line in lines if line)
        if text:
            in_main = any(f.is_main for f in self._frames)
            self._frames[-1].blocks.append(_Block(self._prefix + text, self._kind, in_main, self._part_link_chars))
            if not self._pre:  # a block made: what follows is a paragraph until an element says otherwise
                self._kind, self._prefix = "p", ""
        self._part_link_chars = 0

    # --- the result ----------------------------------------------------------------------------------

    def text(self) -> str:
        blocks = self._frames[0].blocks
        total = sum(len(b.text) for b in blocks)
        if self._saw_main or (self._article_chars and self._article_chars * 2 >= total):
            blocks = [b for b in blocks if b.in_main or _title(b)]
        out: list[str] = []
        previous = ""
        for block in blocks:
            if out:
                out.append("\n" if block.kind == previous and block.kind in ("item", "row") else "\n\n")
            out.append(block.text)
            previous = block.kind
        return "".join(out)


def _title(block: _Block) -> bool:
    """An <h1> outside the main content that is not a link (a site's name is): the page's title."""
    return block.text.startswith("# ") and block.link_chars * 2 < len(block.text)


def _names(named: dict[str, str | None]) -> str:
    return " ".join(named.get(a) or "" for a in ("class", "id", "aria-label")).lower()


def _role(named: dict[str, str | None]) -> str:
    return (named.get("role") or "").lower()


def _consent(named: dict[str, str | None]) -> bool:
    names = _names(named)
    return any(n in names for n in _CONSENT_NAMES)


def _chrome_of(tag: str, named: dict[str, str | None]) -> tuple[bool, bool]:
    """(chrome wherever it is, chrome unless inside <main>/<article>) by the element's tag, role and names."""
    role = _role(named)
    words = set(re.split(r"[^a-z0-9]+", _names(named)))
    if tag in _ALWAYS_CHROME_TAGS or role in _ALWAYS_CHROME_ROLES or _consent(named) or words & _CHROME_WORDS:
        return True, False
    return False, tag in _PAGE_CHROME_TAGS or role in _PAGE_CHROME_ROLES or bool(words & _PAGE_CHROME_WORDS)
