"""Per-entry quality: structural checks, groundedness, near-duplicates, an LLM judge, difficulty.

Each component is a number in [0, 1] kept with the entry, so a score can always
be explained; ``combine`` folds them into one quality_score and ``summarize``
makes the guide's quality_summary.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import struct
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Annotated

import msgspec
from rapidfuzz import fuzz

from dsetlog.evaluation import words  # the one tokenizer of every component below
from dsetlog.evaluation.words import content_words  # public here too: generation matches chunks with it
from dsetlog.llm.structured import Structured
from dsetlog.prompts.replies import InvalidOutput, strip_wrapping
from dsetlog.prompts.templates import NEGATIVE_ANSWER
from dsetlog.scripts import QUESTION_ENDS, word_count

# --- structural checks ----------------------------------------------------------------

_INTERROGATIVES = frozenset(
    """
    what who whom whose when where why how which is are was were am do does did can could should would
    will shall may might must has have had explain describe name list define compare identify summarize
    summarise outline give state
    """.split()
)
_REFUSAL_RE = re.compile(  # "as an ai", "as a (large) language model", "i cannot", "i'm sorry", "i apologise",
    # "i don't have access": the shared openings factored out, which halves the search over a long answer
    r"\b(?:as a(?:n ai\b| (?:large )?language model\b)"
    r"|i(?: (?:cannot|can't|can not|am unable|'m unable)\b|(?:'m| am) sorry\b| apologi[sz]e\b"
    r"| (?:do not|don't) have (?:access|enough information)\b))",
    re.IGNORECASE,
)


_CLOSERS = "\"'»”’」』）)]】 \t\n"
_GREEK_RE = re.compile("[\u0370-\u03ff\u1f00-\u1fff]")
# Questions in Chinese, Japanese and Korean may end on their question particle with a full stop or nothing.
_QUESTION_PARTICLE_RE = re.compile("(?:吗|呢|か|까)[。.]?$")


def is_question(text: str) -> bool:
    """A question in any script, or an English request that opens like one ("Explain ...").

    It ends with a question mark (? ？ ؟ ፧, or Greek's ";"), opens with Spanish "¿", carries Armenian's
    "՞", ends on a Chinese, Japanese or Korean question particle (吗 呢 か 까), or opens with an English
    interrogative or a question-like imperative."""
    t = words.normalise(text).rstrip(_CLOSERS)
    first = words.tokens(t[:64])
    return (
        t.endswith(QUESTION_ENDS)
        or t.lstrip().startswith("¿")
        or "՞" in t
        or (t.endswith(";") and bool(_GREEK_RE.search(t)))
        or bool(_QUESTION_PARTICLE_RE.search(t))
        or (bool(first) and first[0] in _INTERROGATIVES)
    )


def structural_checks(
    question: str,
    answer: str | None,
    *,
    min_question_chars: int = 10,
    max_question_chars: int = 500,
    min_answer_chars: int = 2,
    max_answer_chars: int = 4000,
    copy_threshold: float = 0.85,
    expect_question: bool = True,
) -> dict[str, float]:
    """Cheap checks, each 1.0 (pass) or 0.0 (fail).

    ``answer`` is None for questions-only entries: the answer checks are then left
    out. ``expect_question=False`` leaves out is_question, for instructions and
    summarization requests.
    """
    q, a = question.strip(), (answer.strip() if answer is not None else None)
    checks = {
        "non_empty": float(bool(q) and (a is None or bool(a))),
        "length_ok": float(  # in columns: a wide (Han, kana, Hangul) character counts two
            min_question_chars <= words.width(q) <= max_question_chars
            and (a is None or min_answer_chars <= words.width(a) <= max_answer_chars)
        ),
        "no_refusal": float(not _REFUSAL_RE.search(q) and not (a and _REFUSAL_RE.search(a))),
    }
    if expect_question:
        checks["is_question"] = float(is_question(q))
    if a is not None:
        checks["not_copy"] = float(not _is_copy(q, a, copy_threshold))
    if not readability_defined(f"{q} {a or ''}"):
        checks[READABILITY_UNDEFINED] = 1.0
    return checks


_NEW_CONTENT_SHARE = 0.2


def _is_copy(question: str, answer: str, threshold: float) -> bool:
    """The answer repeats the question: exactly, or nearly (rapidfuzz similarity at or above threshold)
    while adding almost nothing the question lacks (under a fifth of its content words are new).

    The second condition is for languages that ask in place (Chinese, Japanese, Korean): the answer puts
    its fact where the question word was, so 现存的长城大多是明朝修建的 answers 现存的长城大多是哪个朝代修建的
    at 86% similarity, yet "明朝" is the answer."""
    q, a = _copy_text(question), _copy_text(answer)
    if q == a:
        return True
    if fuzz.ratio(q, a) < threshold * 100:
        return False
    claimed = content_words(answer)
    return not claimed or len(claimed - content_words(question)) < _NEW_CONTENT_SHARE * len(claimed)


def _copy_text(text: str) -> str:
    # With no word at all ("？", "…"), the text itself stands: two different such texts are no copies.
    return words.normalised(text) or words.normalise(text).strip()


# --- groundedness ----------------------------------------------------------------------



@functools.cache
def _negative_normalised() -> str:
    return words.normalised(NEGATIVE_ANSWER)  # on first use: importing quality builds no tokenizer


def groundedness(answer: str, chunk: str) -> float:
    """Share of the answer's content words (stemmed, stopwords removed) that occur in the chunk.

    The unanswerable-question answer (NEGATIVE_ANSWER) claims an absence, so it has
    nothing to ground and scores 1.0; whether the text really is silent is the
    judge's call. An answer without content words ("Yes.") scores 0.0: nothing in
    it can be shown to come from the chunk.
    """
    if words.normalised(answer) == _negative_normalised():
        return 1.0
    claimed = content_words(answer)
    if not claimed:
        return 0.0
    return round(len(claimed & content_words(chunk)) / len(claimed), 4)


# --- near-duplicates ---------------------------------------------------------------------

_PERMUTATIONS = 40  # MinHash values per text
_ROWS = 4  # values per LSH band: 10 bands of 4
_BANDS = _PERMUTATIONS // _ROWS
_WORD_HASH_CACHE_LIMIT = 500_000


class NearDuplicates:
    """An incremental near-duplicate index over texts (say, question + answer).

    Two texts are near-duplicates when rapidfuzz's token-sort similarity of their
    normalised forms is at least ``threshold``. Comparing each new text with every
    earlier one would be O(n^2), so candidates come from MinHash LSH blocking over
    the text's stemmed content words: 40 MinHash values, 10 bands of 4; only texts
    sharing a band are compared. A pair whose word sets have a Jaccard similarity
    of 0.8 becomes a candidate with probability 0.995 (0.94 at 0.7, 0.04 at 0.3),
    and texts 0.9 similar share nearly all their words.
    """

    def __init__(self, threshold: float = 0.9) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1] (got {threshold})")
        self.threshold = threshold
        self.comparisons = 0  # rapidfuzz comparisons made so far: what blocking keeps from growing as n^2
        self._ids: list[str] = []
        self._texts: list[str] = []  # token-sorted normalised text, compared by rapidfuzz
        self._cluster: list[int] = []  # index of the first entry of each entry's cluster
        self._index_of: dict[str, int] = {}
        self._exact: dict[str, int] = {}
        self._buckets: dict[int, int | list[int]] = {}  # band key -> entry index(es)
        self._hashes = _WordHashes()

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, entry_id: str, text: str) -> str | None:
        """Index ``text`` as ``entry_id``; return the id of the earlier entry it nearly duplicates, if any."""
        if entry_id in self._index_of:
            raise ValueError(f"entry {entry_id!r} is already indexed")
        found = words.tokens(text)
        # rapidfuzz compares the sorted surface runs (words; Han clauses whole); with no word at all
        # ("？！"), the text itself, so two such texts are not one
        sorted_text = " ".join(sorted(words.surface(text))) or words.normalise(text).strip()
        index = len(self._ids)
        match = self._exact.get(sorted_text)
        keys = self._hashes.band_keys([w for w in found if w not in words.STOPWORDS] or found or [sorted_text])
        if match is None:
            match = self._best_candidate(sorted_text, keys)
        self._store(entry_id, sorted_text, keys, match)
        self._exact.setdefault(sorted_text, index)
        return self._ids[match] if match is not None else None

    def cluster_of(self, entry_id: str) -> str:
        """The id of the first entry of ``entry_id``'s near-duplicate cluster (itself when it has none)."""
        return self._ids[self._cluster[self._index_of[entry_id]]]

    def _best_candidate(self, sorted_text: str, keys: list[int]) -> int | None:
        cutoff = self.threshold * 100
        best, best_score = None, -1.0
        candidates = sorted(self._candidates(keys))  # ascending: ties go to the earliest entry
        self.comparisons += len(candidates)
        for candidate in candidates:
            score = fuzz.ratio(sorted_text, self._texts[candidate], score_cutoff=cutoff)
            if score > best_score and score >= cutoff:
                best, best_score = candidate, score
        return best

    def _candidates(self, keys: list[int]) -> set[int]:
        found: set[int] = set()
        for key in keys:
            members = self._buckets.get(key)
            if isinstance(members, int):
                found.add(members)
            elif members:
                found.update(members)
        return found

    def _store(self, entry_id: str, sorted_text: str, keys: list[int], match: int | None) -> None:
        index = len(self._ids)
        self._ids.append(entry_id)
        self._texts.append(sorted_text)
        self._cluster.append(self._cluster[match] if match is not None else index)
        self._index_of[entry_id] = index
        for key in keys:
            members = self._buckets.get(key)
            if members is None:
                self._buckets[key] = index  # most buckets hold one entry: no list for them
            elif isinstance(members, int):
                self._buckets[key] = [members, index]
            else:
                members.append(index)


class _WordHashes:
    """Each word's MinHash values (one per permutation), cached: datasets reuse their vocabulary.

    One shake_128 call gives all the values of a word at once, and ``min`` over
    ``zip`` runs in C, which keeps a signature cheap in pure Python. shake_128
    (not ``hash``) makes signatures the same in every process.
    """

    def __init__(self) -> None:
        self._cache: dict[str, tuple[int, ...]] = {}
        self._format = struct.Struct(f"<{_PERMUTATIONS}I")

    def signature(self, words: Iterable[str]) -> list[int]:
        return list(map(min, zip(*(self._values(w) for w in set(words)), strict=True)))

    def band_keys(self, words: list[str]) -> list[int]:
        signature = self.signature(words)
        return [hash((band, *signature[band * _ROWS : (band + 1) * _ROWS])) for band in range(_BANDS)]

    def _values(self, word: str) -> tuple[int, ...]:
        values = self._cache.get(word)
        if values is None:  # stemmed, so "symptom" and "symptoms" count as one word
            digest = hashlib.shake_128(words.stem(word).encode("utf-8")).digest(self._format.size)
            values = self._format.unpack(digest)
            if len(self._cache) < _WORD_HASH_CACHE_LIMIT:
                self._cache[word] = values
        return values


# --- LLM judge -------------------------------------------------------------------------------

JUDGE_SYSTEM = f"""\
You grade entries of a question-answering dataset against the source text they were written from.
Reply with JSON only: {{"score": <1-5>, "difficulty": <1-5>}}.

score (quality):
5 = a clear question, and an answer that is correct, complete and fully supported by the text
4 = correct and supported, with a minor omission or wording problem
3 = partly correct, or partly supported by the text
2 = mostly unsupported by the text, or an unclear question
1 = wrong, unsupported, or not a real question and answer
An answer of "{NEGATIVE_ANSWER}" deserves 5 only when the text indeed does not answer the question.

difficulty (for the intended reader):
1 = recalls one stated fact; 2 = connects two stated facts; 3 = needs some domain knowledge or
reasoning; 4 = multi-step reasoning over several parts of the text; 5 = expert-level synthesis."""


def judge_prompt(question: str, answer: str, chunk: str) -> list[dict[str, str]]:
    """Chat messages asking a judge model to grade one entry (see JUDGE_SYSTEM's rubric)."""
    user = f"Source text:\n{chunk}\n\nQuestion:\n{question}\n\nAnswer:\n{answer}"
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


Rating = Annotated[int, msgspec.Meta(ge=1, le=5)]


class JudgeVerdict(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    score: Rating
    difficulty: Rating


JUDGE_SCHEMA = Structured("judge_verdict", {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "difficulty": {"type": "integer", "minimum": 1, "maximum": 5},
    },
    "required": ["score", "difficulty"],
    "additionalProperties": False,
})


def parse_verdict(content: str) -> JudgeVerdict:
    """The judge's reply decoded strictly (integers 1-5, nothing else), or InvalidOutput."""
    try:
        return msgspec.json.decode(strip_wrapping(content), type=JudgeVerdict)
    except msgspec.DecodeError as exc:
        raise InvalidOutput(f"the judge's reply is not the JSON asked for: {exc}") from None


def parse_judge(content: str) -> int:
    """The judge's quality score, 1-5."""
    return parse_verdict(content).score


# --- difficulty ---------------------------------------------------------------------------------

DIFFICULTIES = ("beginner", "intermediate", "advanced", "expert")


_FK_WORD_RE = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
_FK_SENTENCE_RE = re.compile(r"[.!?]+(?=\s|$)")
_VOWEL_GROUP_RE = re.compile(r"[aeiouy]+")


def flesch_kincaid_grade(text: str) -> float:
    """The Flesch-Kincaid grade level: 0.39 * words/sentence + 11.8 * syllables/word - 15.59.

    Computed here rather than with textstat: textstat 0.7.13 fetches NLTK's cmudict
    over the network on first use and fails offline. Syllables are counted by the
    usual vowel-group rule, which is what readability formulas were fitted with.
    """
    words = _FK_WORD_RE.findall(text)
    if not words:
        return 0.0
    sentences = max(1, len(_FK_SENTENCE_RE.findall(text.strip())))
    syllables = sum(map(_syllables, words))
    return round(0.39 * len(words) / sentences + 11.8 * syllables / len(words) - 15.59, 2)


@functools.lru_cache(maxsize=1 << 16)  # words repeat: a dataset's vocabulary is counted once, not per answer
def _syllables(word: str) -> int:
    word = word.lower()
    if len(word) > 2 and word.endswith("e") and not word.endswith(("le", "ee")):
        word = word[:-1]  # a silent final e ("make"), but "table" and "agree" keep theirs
    return max(1, len(_VOWEL_GROUP_RE.findall(word)))


# Flesch-Kincaid is fitted on English; it means something for text in the Latin script and nothing for
# Chinese or Hindi (whose words it cannot count the syllables of).
READABILITY_UNDEFINED = "readability_undefined"  # a component: 1.0 when difficulty could not use readability
_LATIN_SHARE_FOR_READABILITY = 0.5


def readability_defined(text: str) -> bool:
    """Whether the Flesch-Kincaid grade means something for ``text``: most of its letters are Latin."""
    share = words.latin_share(text)
    return share is not None and share >= _LATIN_SHARE_FOR_READABILITY


def difficulty(question: str, answer: str | None, *, judge_score: float | None) -> str:
    """beginner / intermediate / advanced / expert.

    The base level comes from the readability grade of question and answer
    (below 6, below 10, below 14, above) where readability is defined (Latin-script
    text); elsewhere it is neutral: intermediate, and the entry's components say
    READABILITY_UNDEFINED. A long answer (60+ words) adds a level and a
    one-to-five-word answer takes one away, words counted as the script has them
    (a Chinese answer's characters by the characters a word takes). ``judge_score``
    is the judge's difficulty rating (1-5): when it is clearly above or below, it
    moves the level one step towards it.
    """
    text = f"{question} {answer or ''}".strip()
    if readability_defined(text):
        grade = flesch_kincaid_grade(text)
        level = 0 if grade < 6 else 1 if grade < 10 else 2 if grade < 14 else 3
    else:
        level = 1
    answer_words = word_count(answer or "")
    if answer_words >= 60:
        level += 1
    elif 0 < answer_words <= 5:
        level -= 1
    level = min(max(level, 0), 3)
    if judge_score is not None:
        level = _nudge(level, judge_score)
    return DIFFICULTIES[level]


def _nudge(level: int, judge_score: float) -> int:
    if not 1 <= judge_score <= 5:
        raise ValueError(f"judge_score must be between 1 and 5 (got {judge_score})")
    judged = (judge_score - 1) * 3 / 4  # 1..5 onto the levels 0..3
    if judged > level + 0.5:
        return level + 1
    if judged < level - 0.5:
        return level - 1
    return level


# --- combining ----------------------------------------------------------------------------------

GATES = ("non_empty", "no_refusal")  # a failed gate zeroes the score: such an entry is unusable
INFORMATIONAL = (READABILITY_UNDEFINED,)  # say how the entry was scored; no part of the score
DEFAULT_WEIGHTS = {"length_ok": 1.0, "is_question": 1.0, "not_copy": 1.0, "groundedness": 3.0}
JUDGE_WEIGHT = 0.4  # share of the final score given to the judge when there is one
DUPLICATE_FACTOR = 0.5


def combine(
    components: Mapping[str, float],
    *,
    weights: Mapping[str, float] | None = None,
    duplicate: bool,
    judge: int | None,
) -> float:
    """One quality_score in [0, 1] from the components.

    Gates (non_empty, no_refusal) multiply; INFORMATIONAL ones are left out; the others are averaged with
    ``weights`` (DEFAULT_WEIGHTS, 1.0 for others); a judge score (1-5 mapped to
    0..1) takes JUDGE_WEIGHT of the result (or ``weights["judge"]``); a
    near-duplicate is multiplied by DUPLICATE_FACTOR.
    """
    weights = dict(weights or {})
    _check_components(components, weights, judge)
    gate = math.prod(components[g] for g in GATES if g in components)
    graded = {k: v for k, v in components.items() if k not in GATES and k not in INFORMATIONAL}
    score = _weighted_mean(graded, {**DEFAULT_WEIGHTS, **weights})
    if judge is not None:
        share = weights.get("judge", JUDGE_WEIGHT)
        score = (1 - share) * score + share * (judge - 1) / 4
    score *= gate
    if duplicate:
        score *= DUPLICATE_FACTOR
    return round(score, 4)


def _check_components(
    components: Mapping[str, float], weights: Mapping[str, float], judge: int | None
) -> None:
    for name, value in components.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"component {name!r} must be in [0, 1] (got {value})")
    for name, weight in weights.items():
        if name in GATES:
            raise ValueError(f"{name!r} is a gate (a failure zeroes the score); it takes no weight")
        if name in INFORMATIONAL:
            raise ValueError(f"{name!r} says how the entry was scored; it takes no weight")
        if name != "judge" and name not in components:
            raise ValueError(
                f"weight for {name!r}, which is not among the components: {', '.join(components)}"
            )
        if weight < 0 or (name == "judge" and weight > 1):
            raise ValueError(f"weight for {name!r} out of range (got {weight})")
    if judge is not None and not 1 <= judge <= 5:
        raise ValueError(f"judge must be between 1 and 5 (got {judge})")


def _weighted_mean(values: Mapping[str, float], weights: Mapping[str, float]) -> float:
    total = sum(weights.get(k, 1.0) for k in values)
    if total == 0:
        return 1.0  # nothing graded beyond the gates
    return sum(v * weights.get(k, 1.0) for k, v in values.items()) / total


def summarize(scores: Iterable[tuple[float | None, str]]) -> dict:
    """The guide's quality_summary from (quality_score, category) pairs.

    Entries without a score (quality not analysed) count in categories only;
    average_score is None when no entry has a score.
    """
    distribution = {"high": 0, "medium": 0, "low": 0}
    categories: Counter[str] = Counter()
    total, count = 0.0, 0
    for score, category in scores:
        categories[category] += 1
        if score is None:
            continue
        total, count = total + score, count + 1
        distribution["high" if score >= 0.8 else "medium" if score >= 0.5 else "low"] += 1
    return {
        "average_score": round(total / count, 4) if count else None,
        "distribution": distribution,
        "categories": dict(sorted(categories.items(), key=lambda kv: (-kv[1], kv[0]))),
    }
