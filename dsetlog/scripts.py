"""Writing systems: what counts as a word, a sentence end, a question mark and a token in any script.

Shared by the quality scores (dsetlog.evaluation.words), the token estimate the client budgets with
(dsetlog.llm.client) and the simulator, so all three read text the same way.

Scripts that space their words (Latin, Cyrillic, Greek, Arabic, Hebrew, Devanagari, Hangul...) split into
words; those that do not (Han, kana, Thai, Lao, Khmer, Myanmar) are SPACELESS and split into characters,
a vowel sign or tone mark staying with the letter it belongs to. Python's ``\\w`` leaves out combining marks
(Devanagari's vowel signs, Thai's vowels above and below), so WORD_RE adds them.
"""

from __future__ import annotations

import functools
import re
import unicodedata

# Han (with its radicals, iteration marks and compatibility forms), hiragana and katakana, Thai, Lao,
# Myanmar (and its extensions), Khmer (and its symbols), and the supplementary Han planes.
SPACELESS = (
    "\u2e80-\u2fdf\u3005-\u3007\u3021-\u3029\u3038-\u303c\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf"
    "\u4e00-\u9fff\uf900-\ufaff\u0e00-\u0eff\u1000-\u109f\ua9e0-\ua9ff\uaa60-\uaa7f\u1780-\u17ff"
    "\u19e0-\u19ff\U00020000-\U0003134f"
)
# East Asian wide characters: Han, kana, Hangul, CJK punctuation, full-width forms (two columns on a terminal)
WIDE_BMP = (
    "\u1100-\u11ff\u2e80-\u303f\u3040-\ua4cf\ua960-\ua97f\uac00-\ud7a3\uf900-\ufaff\ufe30-\ufe4f"
    "\uff00-\uff60\uffe0-\uffe6"
)
WIDE = WIDE_BMP + "\U00020000-\U0003fffd"
SPACELESS_RE = re.compile(f"[{SPACELESS}]+")
WIDE_RE = re.compile(f"[{WIDE}]+")
LATIN_LETTER_RE = re.compile(r"[A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff]")
LETTER_RE = re.compile(r"[^\W\d_]")

# Sentence ends: Latin/Cyrillic/Greek . ! ?, CJK 。！？ (and the half-width ｡), Arabic ؟ and Urdu ۔,
# Devanagari danda । and double danda ॥, Armenian ։, Ethiopic ።, Myanmar ။, Khmer ។ ៕, Tibetan ། .
SENTENCE_ENDS = ".!?。！？｡؟۔।॥։።။។៕།"
# Question marks that end a question: ASCII and full-width ?, Arabic ؟ (Arabic, Persian, Urdu), Ethiopic ፧.
# Greek's question mark is ";" (U+037E becomes U+003B under NFC), Spanish opens with ¿, Armenian puts ՞ on
# the stressed word: see is_question in dsetlog.evaluation.quality.
QUESTION_ENDS = ("?", "？", "؟", "፧")

_VARIATION_SELECTORS_SUPPLEMENT = (0xE0100, 0xE01EF)


@functools.cache
def combining_marks() -> str:
    """A character class body of every combining mark (categories Mn, Mc, Me) of this Python's Unicode.

    Built on first use (about 40 ms), not at import: most commands never split a word.
    """
    ranges: list[tuple[int, int]] = []
    category = unicodedata.category
    for cp in range(0x300, 0x20000):  # no marks below U+0300; above the SMP only the selectors below
        if category(chr(cp))[0] == "M":
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))
    ranges.append(_VARIATION_SELECTORS_SUPPLEMENT)
    return "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" if a != b else re.escape(chr(a)) for a, b in ranges)


@functools.cache
def word_re() -> re.Pattern[str]:
    """Runs of letters, digits and combining marks: the words of spaced scripts, the runs of spaceless ones."""
    return re.compile(f"(?:[^\\W_]|[{combining_marks()}])+")


_ASCII_WORD_RE = re.compile("[A-Za-z0-9]+")


def word_runs(text: str) -> list[str]:
    """``word_re().findall(text)``: ASCII text (most answers) by a plain class that finds the same runs
    several times faster than the class of every script's combining marks."""
    return _ASCII_WORD_RE.findall(text) if text.isascii() else word_re().findall(text)


@functools.cache
def cluster_re() -> re.Pattern[str]:
    """A character with the combining marks that follow it (Thai "กี่" is one cluster of three code points)."""
    return re.compile(f"[^{combining_marks()}][{combining_marks()}]*")


def clusters(run: str) -> list[str]:
    """The characters of a run of letters, each with its combining marks."""
    return list(run) if run.isascii() else cluster_re().findall(run)


def wide_count(text: str) -> int:
    """How many East Asian wide characters ``text`` holds."""
    return 0 if text.isascii() else sum(map(len, WIDE_RE.findall(text)))


# Letters per word where words are not spaced: segmented Chinese averages about 1.6 characters a word,
# Thai about three letters (a consonant with its vowel signs counted as one).
_HAN_CHARS_PER_WORD = 1.6
_SOUTHEAST_ASIAN_CHARS_PER_WORD = 3.0


def word_count(text: str) -> float:
    """How many words ``text`` holds: spaced words one each, spaceless runs by their letters per word."""
    if text.isascii():
        return float(len(text.split()))
    count = 0.0
    for piece in text.split():
        runs = SPACELESS_RE.findall(piece)
        if not runs:
            count += 1
            continue
        for run in runs:
            per_word = _HAN_CHARS_PER_WORD if WIDE_RE.match(run) else _SOUTHEAST_ASIAN_CHARS_PER_WORD
            count += max(1.0, len(clusters(run)) / per_word)
        count += bool(word_re().search(SPACELESS_RE.sub("", piece)))  # "2008年": the number is a word too
    return count


# --- the token estimate ------------------------------------------------------------------------------------

# Characters per token, measured on the paragraphs of tests/realtext.py (ten languages) with the tokenizers of
# GPT-4o (o200k_base), Qwen3, Llama 3 and DeepSeek-V4; per non-ASCII character, after ASCII at four a token:
#   Cyrillic 2.5-3.1, Arabic 2.3-2.9, Hebrew 0.9-2.5, Greek 1.0-2.3 -> 2.5 for two-byte scripts;
#   Han and kana 1.1-1.6, Hangul 1.0-1.3 -> 1 token a wide character;
#   Devanagari 0.9-2.8, Thai 1.9-2.9 -> 2 for the other three-byte scripts;
#   accented Latin letters cost about a token each (Spanish: 122-163 tokens for 507 ASCII + 20 accented);
#   emoji and other four-byte characters 1-6 tokens -> 2.
# Counted on the UTF-8 bytes, whose lead byte tells a character's block: one C-speed translate and a few
# counts, no regular expression (text.isascii() is the faster path of English prompts).
_ASCII_CHARS_PER_TOKEN = 4.0
_TWO_BYTE_CHARS_PER_TOKEN = 2.5
_THREE_BYTE_CHARS_PER_TOKEN = 2.0
_ASTRAL_TOKENS = 2.0


def _lead_classes() -> bytes:
    table = bytearray(b"." * 256)  # continuation bytes (0x80-0xbf) and invalid ones: not a character
    table[0x00:0x80] = b"a" * 0x80  # ASCII
    table[0xC2:0xCE] = b"1" * 12  # U+0080-U+037F: Latin-1, Latin Extended-A/B, IPA, combining diacritics
    table[0xCE:0xE0] = b"t" * 18  # U+0380-U+07FF: Greek, Cyrillic, Armenian, Hebrew, Arabic, Syriac, Thaana
    table[0xE0:0xF0] = b"o" * 16  # U+0800-U+FFFF: Indic, Thai, Georgian, punctuation, symbols...
    table[0xE3:0xEE] = b"1" * 11  # ...but U+3000-U+DFFF: CJK punctuation, kana, Han, Yi, Hangul (wide)
    table[0xEF] = ord("1")  # U+F000-U+FFFF: CJK compatibility ideographs, full-width forms
    # "1": a token a character (accented Latin letters and wide characters alike), one count for both
    table[0xF0:0xF5] = b"f" * 5  # four bytes: emoji, supplementary Han
    return bytes(table)


_LEADS = _lead_classes()
_CONTINUATION = bytes(range(0x80, 0xC0))


def token_estimate(text: str) -> float:
    """About how many tokens a model's tokenizer makes of ``text`` (the figures above; unrounded)."""
    if text.isascii():
        return len(text) / _ASCII_CHARS_PER_TOKEN
    leads = text.encode("utf-8", "surrogatepass").translate(_LEADS, _CONTINUATION)  # one byte a character
    one, two, three, astral = leads.count(b"1"), leads.count(b"t"), leads.count(b"o"), leads.count(b"f")
    ascii_n = len(leads) - one - two - three - astral
    return (ascii_n / _ASCII_CHARS_PER_TOKEN + one + two / _TWO_BYTE_CHARS_PER_TOKEN
            + three / _THREE_BYTE_CHARS_PER_TOKEN + _ASTRAL_TOKENS * astral)
