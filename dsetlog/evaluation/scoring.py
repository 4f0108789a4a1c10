"""Reference-answer metrics for benchmarks, and the benchmark suites this project can run.

exact_match and token_f1 follow the SQuAD evaluation script: lowercase, drop
punctuation and the articles a/an/the, collapse whitespace. rouge_l is the
LCS-based F1 over the same tokens, but keeps articles (as ROUGE does). As MLQA's
evaluation does for Chinese, text in scripts that do not space their words (Han,
kana, Thai...) counts a token per character, and punctuation is any Unicode P
character (。 ， 、 « »), so a Chinese answer is not one token that matches all or nothing.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter

from dsetlog.prompts.templates import NEGATIVE_ANSWER
from dsetlog.scripts import SPACELESS_RE, clusters

_PUNCTUATION = set(string.punctuation) | {"‘", "’", "“", "”", "–", "—", "…"}
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")


def _unpunctuated(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch not in _PUNCTUATION and unicodedata.category(ch)[0] != "P")


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lowercase, no punctuation, no articles, single spaces."""
    return " ".join(_ARTICLES_RE.sub(" ", _unpunctuated(text)).split())


def _tokens(text: str, *, keep_articles: bool = False) -> list[str]:
    words = _unpunctuated(text).split() if keep_articles else normalize_answer(text).split()
    if all(w.isascii() for w in words):
        return words
    out: list[str] = []
    for word in words:  # a spaceless run gives its characters (with their marks), the rest of a word stays whole
        last = 0
        for run in SPACELESS_RE.finditer(word):
            out += [word[last : run.start()]] if run.start() > last else []
            out += clusters(run.group())
            last = run.end()
        out += [word[last:]] if last < len(word) else []
    return out


def exact_match(pred: str, ref: str) -> float:
    """1.0 when the normalised prediction equals the normalised reference, else 0.0."""
    return float(normalize_answer(pred) == normalize_answer(ref))


def token_f1(pred: str, ref: str) -> float:
    """Harmonic mean of token precision and recall (multiset overlap of normalised tokens)."""
    pred_tokens, ref_tokens = _tokens(pred), _tokens(ref)
    if not pred_tokens or not ref_tokens:
        return float(pred_tokens == ref_tokens)  # both empty: a match; one empty: nothing in common
    common = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    return _f1(common, len(pred_tokens), len(ref_tokens))


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F1: longest common subsequence of tokens against both lengths."""
    pred_tokens, ref_tokens = _tokens(pred, keep_articles=True), _tokens(ref, keep_articles=True)
    if not pred_tokens or not ref_tokens:
        return float(pred_tokens == ref_tokens)
    return _f1(_lcs_length(pred_tokens, ref_tokens), len(pred_tokens), len(ref_tokens))


def _f1(common: int, predicted: int, reference: int) -> float:
    if common == 0:
        return 0.0
    precision, recall = common / predicted, common / reference
    return round(2 * precision * recall / (precision + recall), 4)


def _lcs_length(a: list[str], b: list[str]) -> int:
    """Dynamic programming over one row: O(len(a) * len(b)) time, O(len(b)) memory."""
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b, 1):
            current.append(previous[j - 1] + 1 if token == other else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def score_all(pred: str, ref: str) -> dict[str, float]:
    return {
        "exact_match": exact_match(pred, ref),
        "token_f1": token_f1(pred, ref),
        "rouge_l": rouge_l(pred, ref),
    }


# --- suites ---------------------------------------------------------------------------------------

BENCHMARK_SUITES: dict[str, str] = {
    "reference_qa": (
        "the dataset's own test split: the benchmark model answers each question from its source chunk, "
        "scored against the reference answer by exact match, token F1 and ROUGE-L"
    ),
    "negative_rejection": (
        "the dataset's unanswerable questions (from negativity_ratio): the benchmark model must answer "
        f"exactly {NEGATIVE_ANSWER!r}, and must not give that answer to the answerable ones"
    ),
}
# Well-known suites that need their own data sets, which this project does not download or ship.
EXTERNAL_SUITES = ("glue", "superglue", "mmlu", "squad", "hellaswag", "truthfulqa", "bigbench")


def check_suite(name: str) -> str:
    """The suite's canonical name, or ValueError saying why it cannot run and which suites can."""
    canonical = name.strip().lower()
    available = ", ".join(BENCHMARK_SUITES)
    if canonical in BENCHMARK_SUITES:
        return canonical
    if canonical in EXTERNAL_SUITES:
        raise ValueError(
            f"benchmark suite {name!r} needs data this project does not ship; available suites: {available}"
        )
    raise ValueError(f"unknown benchmark suite {name!r}; available suites: {available}")


def is_rejection(pred: str) -> bool:
    """The prediction is the unanswerable-question answer (normalised exact match with NEGATIVE_ANSWER)."""
    return exact_match(pred, NEGATIVE_ANSWER) == 1.0


def rejection_correct(pred: str, ref: str) -> float:
    """negative_rejection's per-item score: 1.0 when the model refuses exactly when the reference does."""
    return float(is_rejection(pred) == is_rejection(ref))
