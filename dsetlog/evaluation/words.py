"""The one tokenizer of the quality scores: words where a script spaces them, character bigrams where not.

Text is first Unicode-normalised (NFKC, then casefold), so full-width forms, ligatures and case do not
make two spellings of a word differ. Spaced scripts give words (Latin with its diacritics, Cyrillic, Greek,
Arabic, Hebrew, Devanagari with its vowel signs, Hangul); Han, kana, Thai, Lao, Khmer and Myanmar, written
without spaces between words, give overlapping character bigrams (a lone character gives itself), the
usual stand-in for words where no dictionary segmenter is at hand. Mixed text is split per run of script:
"2008年北京奥运会" is the word "2008" and the bigrams of "年北京奥运会".

English words are stemmed by a crude suffix stripper and English stopwords dropped; other languages are not
stemmed (English suffixes mean nothing there), and only the function words of a few non-Latin languages
(Russian, Greek, Arabic, Hebrew, Hindi) are dropped, which no English word can collide with.
"""

from __future__ import annotations

import functools
import unicodedata

from dsetlog.scripts import LATIN_LETTER_RE, LETTER_RE, SPACELESS_RE, WIDE_RE, clusters, word_runs

_ENGLISH_STOPWORDS = """
    a about above after again against all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had
    has have having he her here hers herself him himself his how i if in into is it its itself just
    me more most my myself no nor not now of off on once only or other our ours ourselves out over own
    same she should so some such than that the their theirs them themselves then there these they this
    those through to too under until up very was we were what when where which while who whom why will
    with would you your yours yourself yourselves
"""
# The commonest function words (prepositions, conjunctions, particles, pronouns, copulas) of each language.
_RUSSIAN_STOPWORDS = """
    и в во не что он на я с со как а то все она так его но да ты к у же вы за бы по только ее её мне было
    вот от меня еще ещё нет о об из ему когда даже ну ли если уже или ни быть был была были него до вас
    там потом себя ей может они тут где есть для мы тебя их чем сам без чего тоже себе под будет ж тогда
    кто этот того потому этого какой ним здесь этом тем чтобы нее куда всех можно при это эти эта эту
    этой такой им более всегда между который которая которое которые также
"""
_ARABIC_STOPWORDS = """
    في من على إلى الى عن أن إن ان التي الذي الذين هو هي هم ما لا لم لن كان كانت هذا هذه ذلك تلك مع أو او
    ثم قد كل بين عند بعد قبل حتى حيث إذا اذا كما أي غير بل
"""
_HINDI_STOPWORDS = """
    है हैं था थे थी के का की को में से पर और या भी यह वह ये वे एक इस उस इसकी इसके उसकी उसके लिए तथा जो ने कि
    तो ही हो होता होती होते कर किया गया गई जाता जाती
"""
_GREEK_STOPWORDS = """
    ο η το οι τα του της των τον την τη τις τους στο στη στην στον στα στις στους σε με για από και που ένα
    ένας μια μία είναι ήταν δεν θα να ως ή αλλά όπως
"""
_HEBREW_STOPWORDS = """
    של את על עם גם כי לא הוא היא הם הן זה זו זאת או אם אבל יש אין כל בין אל
"""


def normalise(text: str) -> str:
    """NFKC, then casefold: "Ｆｕｌｌ-ｗｉｄｔｈ" and "full-width", "Straße" and "STRASSE" read alike."""
    return unicodedata.normalize("NFKC", text).casefold()


STOPWORDS = frozenset(
    normalise(w)
    for words in (_ENGLISH_STOPWORDS, _RUSSIAN_STOPWORDS, _ARABIC_STOPWORDS, _HINDI_STOPWORDS, _GREEK_STOPWORDS,
                  _HEBREW_STOPWORDS)
    for w in words.split()
)
_SUFFIXES = ("ations", "ation", "ings", "ing", "ies", "ied", "es", "ed", "ly", "s")


def stem(word: str) -> str:
    """A crude English suffix stripper: enough to match "symptoms"/"symptom" or "causes"/"caused"/"cause".

    Only ASCII words are stemmed: Cyrillic, Greek or Devanagari words keep their endings."""
    if not word.isascii():
        return word
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            base = word[: -len(suffix)]
            return base + "y" if suffix in ("ies", "ied") else base
    return word


@functools.lru_cache(maxsize=4096)
def _tokens(text: str) -> tuple[str, ...]:
    out: list[str] = []
    for run in word_runs(normalise(text)):
        if run.isascii() or not SPACELESS_RE.search(run):
            out.append(run)
            continue
        last = 0
        for found in SPACELESS_RE.finditer(run):
            if found.start() > last:
                out.append(run[last : found.start()])
            chars = clusters(found.group())
            out.extend([a + b for a, b in zip(chars, chars[1:], strict=False)] if len(chars) > 1 else chars)
            last = found.end()
        if last < len(run):
            out.append(run[last:])
    return tuple(out)


def tokens(text: str) -> list[str]:
    """The words (and bigrams of spaceless scripts) of ``text``, normalised, in order; nothing dropped.

    Cached: a chunk's text comes back for every entry made from it."""
    return list(_tokens(text) if len(text) < 20_000 else _tokens.__wrapped__(text))


def surface(text: str) -> list[str]:
    """The runs of letters and digits of ``text``, normalised: its words, and spaceless runs left whole."""
    return word_runs(normalise(text))


def normalised(text: str) -> str:
    """``text`` with case, punctuation and spacing differences gone (its surface runs joined by spaces).

    What rapidfuzz compares: on characters, since the bigrams of a Han run would count each shared
    character twice."""
    return " ".join(surface(text))


@functools.lru_cache(maxsize=4096)
def _content_words(text: str) -> frozenset[str]:
    return frozenset(stem(w) for w in _tokens(text) if w not in STOPWORDS)


def content_words(text: str) -> set[str]:
    """Stemmed words of ``text`` that carry meaning (stopwords removed), numbers included."""
    return set(_content_words(text) if len(text) < 20_000 else _content_words.__wrapped__(text))


def width(text: str) -> int:
    """The length of ``text`` in columns: an East Asian wide character (Han, kana, Hangul) counts two.

    A Chinese question of five characters says about what an English one of ten or more does (in parallel
    texts a Han character carries two to four Latin letters' worth), so character limits meant for Latin
    text are applied to the width."""
    return len(text) + (0 if text.isascii() else sum(map(len, WIDE_RE.findall(text))))


def latin_share(text: str) -> float | None:
    """The share of ``text``'s letters that are Latin (None: it has no letters)."""
    if text.isascii():  # every ASCII letter is Latin: one search instead of two passes over every answer
        return 1.0 if LETTER_RE.search(text) else None
    letters = len(LETTER_RE.findall(text))
    return len(LATIN_LETTER_RE.findall(text)) / letters if letters else None
