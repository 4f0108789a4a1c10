"""The synthetic text the simulator writes: answer material drawn from a request's own messages.

Answers are deterministic functions of ``(seed, prompt key)`` and are built from sentences and words of
the prompt, so a later groundedness check over a source chunk finds support in them.  ``Source`` holds
one request's material (its statements, questions and keywords, with a seeded RNG); when the prompt labels
its source text ("Text:", "Source text:", "Context:"...), the statements come from that text alone, as a
model answers from the text it is given and not from the instructions around it; when the prompt has no
statements of its own, it writes filler sentences around the prompt's keywords.  Sentences and words are
found in any script (dsetlog.scripts: 。！？ and । end sentences, Han and Thai have no spaces).  Token
counts are the client's estimate for each script (dsetlog.scripts.token_estimate).
"""

from __future__ import annotations

import functools
import json
import math
import random
import re
from typing import Any

from dsetlog.scripts import (
    QUESTION_ENDS,
    SENTENCE_ENDS,
    SPACELESS_RE,
    WIDE_RE,
    clusters,
    combining_marks,
    token_estimate,
    word_count,
)

FENCE_RE = re.compile(r"```[A-Za-z0-9_+-]*[ \t]*\n?(.*?)```", re.S)
SCHEMA_LABEL_RE = re.compile(r"json[ _-]?schema\s*:", re.I)
# A sentence ends at . ! ? (and the other scripts' ends) before a space, right after 。！？, and where Thai,
# Lao, Khmer or Myanmar text, which has no full stop, puts a space between two phrases.
_SOUTHEAST_ASIAN = "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff"
_SENT_SPLIT_RE = re.compile(
    f"(?<=[{re.escape(SENTENCE_ENDS)}])\\s+|(?<=[。！？｡])\\s*|(?<=[{_SOUTHEAST_ASIAN}])\\s+(?=[{_SOUTHEAST_ASIAN}])"
)
_BULLET_RE = re.compile(r"^\s*(?:[-*•>#]+|\d{1,3}[.)])\s*")
_SALIENT_MIN = 4
_MAX_SENTENCE_WORDS = 60
# The label a prompt puts on its own line above the source text, and the label that starts the next part.
_SOURCE_LABEL_RE = re.compile(
    r"^[ \t]*(?:source[ \t]+)?(?:text|context|document|passage|excerpt|source)[ \t]*:[ \t]*$", re.I | re.M
)
_PART_LABEL_RE = re.compile(r"\n[ \t]*\n(?=[ \t]*[A-Z][A-Za-z ]{0,40}:)")
_ABBREVIATION_END_RE = re.compile(
    r"(?:^|[\s(])(?:[A-Z]|St|Mt|Ft|Mr|Mrs|Ms|Dr|Prof|Sr|Jr|Gen|Col|Capt|Rev|No|Fig|vs|etc|approx|Inc|Ltd|Co|e\.g|i\.e)\.$"
)
_LABEL_LINE_RE = re.compile(r"\[[^\[\]]*\]")
_WORD_LIMIT_RE = re.compile(
    r"\b(?:in|at most|no more than|up to)\s+(?:at most\s+)?(\d{1,2}|one|two|three|four|five|six|seven|eight|nine|"
    r"ten|eleven|twelve)\s+words\b", re.I)
_TOPIC_WORDS = 4  # what a model gives when asked for a topic "in at most eight words"
_HIRAGANA_RE = re.compile("[\u3040-\u309f]+")
_ASKED_RE = re.compile(r"^[ \t]*(?:question|instruction)[ \t]*:[ \t]*(\S.*)$", re.I | re.M)


@functools.cache
def _word_re() -> re.Pattern[str]:
    # a word: letters (with their combining marks: Devanagari's vowel signs are no \w), inner ' and -
    marks = combining_marks()
    return re.compile(f"(?:[^\\W\\d_])(?:[\\w'\\-{marks}])*(?:[^\\W_]|[{marks}])")


# Sentences that instruct the model rather than inform it; they make poor answer material.
_INSTRUCTION_STARTS = frozenset(
    "generate create write return respond answer use provide produce give list output make do don't "
    "read based given each only format include avoid ensure keep consider here below follow please".split()
)
_INSTRUCTION_WORDS_RE = re.compile(
    r"\b(?:json|schema|you|your|reviewer|feedback|previous (?:version|answer|question|summary|response))\b"
)
# A reviewer's notes in a regeneration prompt: what to fix, not what to say.
_FEEDBACK_RE = re.compile(r"^[ \t]*(?:reviewer[ \t]+)?feedback[ \t]*:.*?(?=\n[ \t]*\n|\Z)", re.I | re.M | re.S)


@functools.lru_cache(maxsize=8192)
def _is_instruction(sentence: str) -> bool:
    low = sentence.lower()
    first = low.split(None, 1)[0].strip(",:;")
    return (
        first in _INSTRUCTION_STARTS
        or low.startswith("the following")
        or bool(_INSTRUCTION_WORDS_RE.search(low))
    )


_COUNT_RE = re.compile(
    r"\b(\d{1,3}|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty)\s+"
    r"(?:[\w/&-]+\s+){0,3}?(?:questions?|items?|pairs?|examples?|entries|entry|q&as?|qas?|q/as?|"
    r"samples?|records?|rows?)\b",
    re.I,
)
_NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20,
}  # fmt: skip
_STOPWORDS = frozenset(
    """
    about above after again against also although among another any anything are aren't around
    because been before being below between both but can cannot could did does doing done down
    during each either else enough even ever every few find first following for from further
    generate given gives had has have having her here hers herself him himself his how however
    into its itself just know like made make many may might more most much must near need neither
    never next none nor not nothing now off often once one only onto other others otherwise our ours
    ourselves out over own please provide question questions answer answers rather really same
    several shall she should since some something such than that the their theirs them themselves
    then there therefore these they thing things this those though through thus too toward under
    until upon very was wasn't were what whatever when where whether which while who whom whose why
    will with within without would yet you your yours yourself text based using used uses use
    following write return respond json schema object field fields format output simulated
    """.split()
)

_FILLER_TEMPLATES: tuple[str, ...] = (
    "The main point concerns {a}, and it is best understood together with {b}.",
    "A useful way to approach {a} is to start from {b} and work outward.",
    "Most accounts describe {a} in relation to {b}.",
    "The key facts are about {a}; the details of {b} follow from them.",
    "Discussions of {a} usually also mention {b}.",
    "It helps to separate what is known about {a} from what is assumed about {b}.",
)
def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return ""


def message_texts(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(str(m.get("role", "")), _content_text(m.get("content"))) for m in messages]


def _strip_json_bits(text: str) -> str:
    """Drop fenced blocks and labelled schemas: they are format instructions, not content."""
    text = FENCE_RE.sub("\n", text)
    match = SCHEMA_LABEL_RE.search(text)
    while match:
        rest = text[match.end() :].lstrip()
        try:
            _, end = json.JSONDecoder().raw_decode(rest)
        except ValueError:
            text = text[: match.start()]
            break
        text = text[: match.start()] + "\n" + rest[end:]
        match = SCHEMA_LABEL_RE.search(text)
    return text


def _sentences(text: str) -> tuple[list[str], list[str]]:
    """Split text into (statements, questions), keeping only sentence-like pieces."""
    statements: list[str] = []
    questions: list[str] = []
    for line in _unwrapped(text.splitlines()):
        if line.strip():
            # Huge single lines are not worth keeping in the cache.
            s, q = _line_sentences(line) if len(line) < 4096 else _line_sentences.__wrapped__(line)
            statements.extend(s)
            questions.extend(q)
    return statements, questions


def _unwrapped(lines: list[str]) -> list[str]:
    """Lines wrapped inside a sentence joined again: a line that ends mid-sentence and a next one that goes
    on in lower case ("keep what was" / "right, and stay faithful") are one sentence."""
    out: list[str] = []
    for line in lines:
        stripped = line.strip()
        if (out and stripped[:1].islower() and out[-1].strip()
                and out[-1].rstrip()[-1] not in SENTENCE_ENDS + ":" and not _BULLET_RE.match(line)):
            out[-1] = out[-1].rstrip() + " " + stripped
        else:
            out.append(line)
    return out


@functools.lru_cache(maxsize=8192)
def _line_sentences(line: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    # Cached per line because the same source chunk comes back in many prompts (slots, retries).
    statements: list[str] = []
    questions: list[str] = []
    line = _BULLET_RE.sub("", line).strip()
    if line and not _LABEL_LINE_RE.fullmatch(line):  # "[Topic]" above a chunk is its label, not a sentence
        for piece in _joined_abbreviations(_SENT_SPLIT_RE.split(line)):
            piece = piece.strip().strip('"').strip()
            if not piece or word_count(piece) < 4:
                continue
            words = piece.split()
            if len(words) > _MAX_SENTENCE_WORDS:
                piece = " ".join(words[:_MAX_SENTENCE_WORDS]).rstrip(",;:") + "."
            if piece.endswith(QUESTION_ENDS):
                questions.append(piece)
            else:
                statements.append(piece + _full_stop(piece))
    return tuple(statements), tuple(questions)


def _joined_abbreviations(pieces: list[str]) -> list[str]:
    """Pieces cut after "St." or "Dr." or an initial put back together: "Mount St. Helens" is one name."""
    out: list[str] = []
    for piece in pieces:
        if out and _ABBREVIATION_END_RE.search(out[-1]):
            out[-1] += " " + piece
        else:
            out.append(piece)
    return out


def _full_stop(piece: str) -> str:
    """What ends a statement that has no end of its own: 。 for Han and kana, nothing for Thai, else "."."""
    if piece[-1] in SENTENCE_ENDS:
        return ""
    if WIDE_RE.fullmatch(piece[-1]):
        return "。"
    return "" if re.match(f"[{_SOUTHEAST_ASIAN}]", piece[-1]) else "."


def source_text(text: str) -> str:
    """The source text a prompt labels ("Text:" on its own line, and what follows it up to the next labelled
    part, such as "Question: ..."), or "" when it labels none. The last label wins: the text comes last."""
    labels = list(_SOURCE_LABEL_RE.finditer(text))
    if not labels:
        return ""
    rest = text[labels[-1].end() :]
    return _PART_LABEL_RE.split(rest, 1)[0].strip()


def _keywords(text: str) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for word in _word_re().findall(text):
        low = word.lower()
        if len(low) < _SALIENT_MIN or low in _STOPWORDS or low in seen or SPACELESS_RE.search(word):
            continue
        seen.add(low)
        out.append(word)
    return out + _spaceless_terms(text)


def _spaceless_terms(text: str) -> list[str]:
    """Terms of Han, kana or Thai text, which has no spaces to find words by: the pieces that recur (two
    characters of Han or kana, four letters of Thai), most frequent first; a term repeats where words do."""
    if text.isascii():
        return []
    counts: dict[str, int] = {}
    for run in SPACELESS_RE.findall(text):
        chars = clusters(run)
        n = 2 if WIDE_RE.fullmatch(run[0]) else 4
        for i in range(len(chars) - n + 1):
            term = "".join(chars[i : i + n])
            counts[term] = counts.get(term, 0) + 1
    # hiragana is grammar (particles, endings: "には", "山で"): terms are kanji or katakana
    repeated = [t for t, c in counts.items() if c > 1 and not _HIRAGANA_RE.search(t)]
    return sorted(repeated, key=lambda t: -counts[t])  # stable: ties keep their first appearance


def _match_terms(text: str) -> set[str]:
    """What two texts share when they speak of the same thing: words, and the bigrams of spaceless runs."""
    terms = {k.lower() for k in _keywords(text)}
    for run in SPACELESS_RE.findall(text):
        chars = clusters(run)
        terms.update(a + b for a, b in zip(chars, chars[1:], strict=False))
    return terms


def salient(sentence: str) -> list[str]:
    """Content words of a sentence, most telling (longest) first."""
    words = _keywords(sentence)
    return sorted(words, key=lambda w: (-len(w), words.index(w)))


class Source:
    """Answer material drawn from one request's messages, with a seeded RNG."""

    def __init__(self, messages: list[dict[str, Any]], rng: random.Random) -> None:
        self.rng = rng
        texts = message_texts(messages)
        users = [t for role, t in texts if role == "user"]
        self.user_text = users[-1] if users else (texts[-1][1] if texts else "")
        cleaned = _FEEDBACK_RE.sub("", _strip_json_bits(self.user_text))
        statements, self.questions = _sentences(cleaned)
        source = source_text(cleaned)
        if source:
            # A model answers from the text it is given, never from the instructions or the earlier
            # answer around it ("A reviewer found the previous version wanting.").
            statements = _sentences(source)[0] or statements
        informative = [s for s in statements if not _is_instruction(s)]
        statements = informative or statements
        self._texts = texts
        self._cleaned = cleaned
        self._source = source
        asked = _ASKED_RE.search(cleaned[cleaned.rfind(source) + len(source) :]) if source else None
        self.asked = asked.group(1).strip() if asked else ""  # the question the source text is to answer
        self._keywords: list[str] | None = None
        if not statements:
            # The last user message is only a question or an instruction: fall back on the rest
            # of the conversation (a system prompt may carry the source text).
            more, _ = _sentences(self._others())
            statements = [s for s in more if not _is_instruction(s)]
        self.grounded = bool(statements)
        if not statements:
            statements = self._filler(6)
        self.statements = statements
        # Anchors count from 0; the seeded start offset makes different prompts begin elsewhere.
        self._start = rng.randrange(len(statements))
        self._next_anchor = 0
        self.used: set[str] = set()

    def _others(self) -> str:
        return "\n".join(_strip_json_bits(t) for _, t in self._texts if t is not self.user_text)

    @property
    def keywords(self) -> list[str]:
        # Computed on demand: tokenising the whole prompt is the costliest step and plain answers
        # built from statements never need it.
        if self._keywords is None:
            # the source text's own words first: the instructions' words ("pairs", "category") are no topic
            self._keywords = (_keywords(self._source) if self._source else []) or _keywords(self._cleaned) \
                or _keywords(self._others())
        return self._keywords

    def _filler(self, n: int) -> list[str]:
        kws = self.keywords or ["the topic", "its context"]
        out = []
        for i in range(n):
            a = kws[i % len(kws)]
            b = kws[(i + 1) % len(kws)] if len(kws) > 1 else "its context"
            out.append(
                _FILLER_TEMPLATES[(i + self.rng.randrange(len(_FILLER_TEMPLATES))) % 6].format(a=a, b=b)
            )
        return out

    def next_anchor(self) -> int:
        self._next_anchor += 1
        return self._next_anchor - 1

    def statement(self, index: int) -> str:
        n = len(self.statements)
        base = self.statements[(self._start + index) % n]
        wrap = (index // n) % n if n > 1 else 0
        if wrap:
            # Past the end of the material: pair statements so repeated draws still differ.
            return f"{base} {self.statements[(self._start + index + wrap) % n]}"
        return base

    def keyword(self, index: int) -> str:
        if not self.keywords:
            return "topic"
        return self.keywords[index % len(self.keywords)]

    def plain_answer(self) -> str:
        """Two or three statements in a row: from the one that best matches the question asked of the
        source text, when the prompt asks one, else from a seeded place; a few keywords when the prompt
        asks for a handful of words (a topic)."""
        limit = _WORD_LIMIT_RE.search(self._cleaned)
        if limit and self.keywords:
            # "Give the topic of this text in at most eight words": a few of its words, not its sentences
            wanted = _NUMBER_WORDS.get(limit.group(1).lower()) or int(limit.group(1))
            return "Simulated answer: " + " ".join(self.keywords[: max(1, min(wanted, _TOPIC_WORDS))])
        if not self.grounded:
            # Only a question was asked: a model answers it from what it knows, in a paragraph (real answers
            # to an open question run to hundreds of characters), about the question's own words.
            return "Simulated answer: " + " ".join(self._filler(self.rng.randint(5, 8)))
        n = len(self.statements)
        k = min(n, self.rng.choice((2, 3)))
        start = self.rng.randrange(n)
        if self.asked and self.grounded:
            wanted = _match_terms(self.asked)
            start = max(range(n), key=lambda i: (len(wanted & _match_terms(self.statements[i])), -i))
        picked = [self.statements[(start + i) % n] for i in range(k)]
        return "Simulated answer: " + " ".join(picked)

    def reasoning(self) -> str:
        topic = ", ".join(self.keywords[:3]) or "the request"
        lead = f"The request is about {topic}."
        if self.grounded:
            lead += f" The most relevant statement is: {self.statement(0)}"
        return f"{lead} I will answer briefly and stay close to the given text. (simulated reasoning)"

    def requested_count(self) -> int | None:
        match = _COUNT_RE.search(_strip_json_bits(self.user_text))
        if not match:
            return None
        raw = match.group(1).lower()
        value = _NUMBER_WORDS.get(raw) or int(raw)
        return value if 0 < value <= 200 else None


def tokens(text: str) -> int:
    """A text's tokens as the simulator counts them: the client's estimate for its script, at least one."""
    return max(1, math.ceil(token_estimate(text)))


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """The messages' tokens: the usage's prompt_tokens, and what context_tokens is checked on."""
    return max(1, math.ceil(sum(token_estimate(t) for _, t in message_texts(messages))))
