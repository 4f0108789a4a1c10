"""Text extraction from real files made by the tests: PDF (fpdf2), HTML, .docx (python-docx), markdown."""

from __future__ import annotations

from pathlib import Path

import docx
import pytest
from helpers import make_image_pdf, make_pdf

from dsetlog.catalog.extract import ExtractError, content_hash, extract_bytes, extract_text

PAGE_ONE = "The first page explains photosynthesis in green plants."
PAGE_TWO = "The second page describes cellular respiration in mitochondria."


def test_pdf_pages_are_joined_with_blank_lines(tmp_path: Path) -> None:
    got = extract_text(make_pdf(tmp_path / "doc.pdf", [PAGE_ONE, PAGE_TWO]))
    assert got.text == f"{PAGE_ONE}\n\n{PAGE_TWO}"
    assert got.pages == 2
    assert got.media_type == "application/pdf"
    assert got.extractor.startswith("pypdf ")


def test_image_only_pdf_is_refused_with_the_reason(tmp_path: Path) -> None:
    make_image_pdf(tmp_path / "scan.pdf")
    with pytest.raises(ExtractError, match="no text layer"):
        extract_text(tmp_path / "scan.pdf")


def test_password_protected_pdf_is_refused(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "locked.pdf", [PAGE_ONE], owner_password="o", user_password="u")
    with pytest.raises(ExtractError, match="encrypted"):
        extract_text(path)


def test_pdf_encrypted_without_a_user_password_opens(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "owner.pdf", [PAGE_ONE], owner_password="o")
    assert extract_text(path).text == PAGE_ONE


def test_garbage_named_pdf_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "bad.pdf").write_bytes(b"this is not a pdf at all")
    with pytest.raises(ExtractError, match="bad.pdf"):
        extract_text(tmp_path / "bad.pdf")


HTML = """<!doctype html>
<html><head><title>Ignored title</title><style>p { color: red; }</style>
<script>var secret = "do not keep";</script></head>
<body>
<nav><a href="/">Home</a> | <a href="/about">About</a></nav>
<h1>Caf&eacute; guide</h1>
<p>Coffee &amp; tea are
   served all day.</p>
<h2>Opening hours</h2>
<ul><li>Monday to Friday: 8&ndash;18</li><li>Saturday: 9&ndash;14</li></ul>
<p>Closed on Sundays.<br>Call ahead for groups.</p>
<script>alert("x")</script>
</body></html>
"""


def test_html_keeps_structure_and_drops_script_style_nav(tmp_path: Path) -> None:
    (tmp_path / "page.html").write_text(HTML, encoding="utf-8")
    got = extract_text(tmp_path / "page.html")
    assert got.text == (
        "# Café guide\n\n"
        "Coffee & tea are served all day.\n\n"
        "## Opening hours\n\n"
        "- Monday to Friday: 8–18\n"
        "- Saturday: 9–14\n\n"
        "Closed on Sundays.\nCall ahead for groups."
    )
    assert got.media_type == "text/html"
    for dropped in ("secret", "alert", "color", "Home", "Ignored title"):
        assert dropped not in got.text


def test_htm_extension_and_table_cells(tmp_path: Path) -> None:
    (tmp_path / "t.htm").write_text(
        "<table><tr><th>Drug</th><th>Dose</th></tr><tr><td>A</td><td>5 mg</td></tr></table>", encoding="utf-8"
    )
    assert extract_text(tmp_path / "t.htm").text == "Drug | Dose\nA | 5 mg"  # a table's rows read as one block


def test_docx_paragraphs_headings_and_lists(tmp_path: Path) -> None:
    document = docx.Document()
    document.add_heading("Annual report", level=1)
    document.add_paragraph("Revenue grew by ten percent.")
    document.add_heading("Risks", level=2)
    document.add_paragraph("Currency exposure", style="List Bullet")
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "Year"
    table.rows[0].cells[1].text = "2024"
    document.save(str(tmp_path / "report.docx"))

    got = extract_text(tmp_path / "report.docx")
    assert got.text == (
        "# Annual report\n\nRevenue grew by ten percent.\n\n## Risks\n\n- Currency exposure\n\nYear | 2024"
    )
    assert got.media_type.endswith("wordprocessingml.document")
    assert got.pages is None


def test_markdown_is_kept_as_markdown(tmp_path: Path) -> None:
    source = "# Title\r\n\r\nSome *emphasis* and `code`.\r\n\r\n## Part\r\n\r\n- item\r\n"
    (tmp_path / "notes.md").write_bytes(source.encode("utf-8"))
    got = extract_text(tmp_path / "notes.md")
    assert got.text == source.replace("\r\n", "\n")
    assert got.media_type == "text/markdown"


def test_text_with_bom_and_cp1252_fallback(tmp_path: Path) -> None:
    (tmp_path / "bom.txt").write_bytes("\ufeffhello".encode())
    assert extract_text(tmp_path / "bom.txt").text == "hello"
    (tmp_path / "legacy.txt").write_bytes("naïve café".encode("cp1252"))
    got = extract_text(tmp_path / "legacy.txt")
    assert got.text == "naïve café"
    assert "cp1252" in got.extractor


def test_unknown_extension_names_the_supported_types(tmp_path: Path) -> None:
    (tmp_path / "sheet.xlsx").write_bytes(b"x")
    with pytest.raises(ExtractError, match=r"\.pdf.*\.docx|\.docx.*\.pdf") as info:
        extract_text(tmp_path / "sheet.xlsx")
    assert ".xlsx" in str(info.value)


def test_empty_document_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    with pytest.raises(ExtractError, match="no text"):
        extract_text(tmp_path / "empty.txt")
    with pytest.raises(ExtractError, match="cannot read"):
        extract_text(tmp_path / "missing.txt")


def test_extract_bytes_matches_extract_text(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "doc.pdf", [PAGE_ONE, PAGE_TWO])
    assert extract_bytes(path.read_bytes(), "upload.PDF") == extract_text(path)


def test_content_hash_is_sha256_hex() -> None:
    assert content_hash(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert content_hash(b"abc") != content_hash(b"abd")
