"""Helpers several test modules share (imported as ``helpers``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

from pathlib import Path

from fpdf import FPDF
from fpdf.enums import EncryptionMethod


def make_pdf(path: Path, pages: list[str], **encryption: object) -> Path:
    """A PDF with one page of text per item of pages; encryption: fpdf2's set_encryption arguments (RC4)."""
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    if encryption:
        pdf.set_encryption(encryption_method=EncryptionMethod.RC4, **encryption)
    pdf.output(str(path))
    return path


def make_image_pdf(path: Path) -> Path:
    """A PDF with a filled rectangle and no text layer, like a scan."""
    pdf = FPDF()
    pdf.add_page()
    pdf.rect(10, 10, 80, 60, style="F")
    pdf.output(str(path))
    return path
