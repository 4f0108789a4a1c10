"""JSON the simulator writes: instances of a JSON Schema, and the schema or example a prompt shows.

``SchemaGen`` walks a (subset of) JSON Schema (``$ref``, ``anyOf``/``oneOf``/``allOf``, bounds, lengths,
formats) and fills each string by the role its field's name suggests (a question, an answer, a label,
a title, an id...) from the request's ``text.Source``, so a question and its answer in one object come
from the same statement and the items of an array differ.  ``json_in_prompt`` finds the schema (or the
example object) a prompt shows, for the modes that answer JSON without a response_format schema.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from dsetlog.simulator.reply import _BadRequest
from dsetlog.simulator.text import FENCE_RE, SCHEMA_LABEL_RE, Source, message_texts, salient


def _name_tokens(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return [t for t in re.split(r"[\s_\-.]+", spaced.lower()) if t]


_WORD_ROLES = ("category", "categories", "label", "topic", "tag", "class", "type", "kind", "keyword",
               "subject", "domain", "genre", "intent", "sentiment", "entity")  # fmt: skip
_TITLE_ROLES = ("title", "name", "heading", "headline")
_QUESTION_ROLES = ("question", "query", "prompt", "instruction", "ask", "q")


def _role(name: str) -> str:
    tokens = _name_tokens(name)
    if not tokens:
        return "sentence"
    last = tokens[-1]
    if last in ("id", "uid", "uuid", "key"):
        return "id"
    if last.startswith(_WORD_ROLES):
        return "word"
    if last.startswith(_TITLE_ROLES):
        return "title"
    if last.startswith(("difficulty", "level", "complexity")):
        return "difficulty"
    if last.startswith(("lang", "locale")):
        return "language"
    if last.startswith(("url", "uri", "link", "href")):
        return "url"
    if last.startswith("email"):
        return "email"
    if any(t.startswith(_QUESTION_ROLES) and (len(t) > 1 or t == "q") for t in tokens):
        return "question"
    if last.startswith(("answer", "response", "completion", "solution")):
        return "answer"
    return "sentence"

_QUESTION_TEMPLATES: tuple[str, ...] = (
    "What does the text say about {k}?",
    "How is {k} described in the text?",
    "What role does {k} play according to the text?",
    "Why does the text mention {k}?",
    "What is stated about {k}?",
)


class SchemaGen:
    """Builds a JSON value that validates against a (subset of) JSON Schema, from prompt material."""

    max_depth = 6
    hard_depth = 48  # only reached by schemas whose required fields recurse forever

    def __init__(self, root: Any, source: Source) -> None:
        self.root = root
        self.src = source
        self.rng = source.rng
        self.requested = source.requested_count()
        self._anchor: int | None = None
        self._offset = 0
        self._counter = 0

    # -- entry points

    def instance(self) -> Any:
        return self.gen(self.root, "", 0, outermost=True)

    def from_example(self, example: Any, name: str = "", outermost: bool = True) -> Any:
        """A value shaped like an example object (used when a prompt shows JSON but no schema)."""
        if isinstance(example, dict):
            return self._object_scope(
                lambda: {k: self.from_example(v, k, outermost) for k, v in example.items()}
            )
        if isinstance(example, list):
            count = self.requested if (outermost and self.requested) else max(len(example), 1)
            proto = example[0] if example else ""
            return self._distinct_items(count, lambda: self.from_example(proto, name, False))
        if isinstance(example, bool):
            return example
        if isinstance(example, int):
            return self._integer({}, name)
        if isinstance(example, float):
            return self._number({}, name)
        if example is None:
            return None
        return self._string({}, name)

    # -- the walk

    def gen(self, schema: Any, name: str, depth: int, outermost: bool) -> Any:
        if depth > self.hard_depth:
            raise _BadRequest("response_format schema is too deeply nested or recursive", "response_format")
        if schema is True or not isinstance(schema, dict):
            return self._string({}, name)
        schema = self._resolve(schema)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return self._enum(schema["enum"])
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                # First option, but skip a leading {"type": "null"} so Optional[X] gets an X.
                resolved = [self._resolve(o) if isinstance(o, dict) else o for o in options]
                chosen = next((o for o in resolved if not _is_null_schema(o)), resolved[0])
                merged = {k: v for k, v in schema.items() if k not in (key,)}
                if isinstance(chosen, dict):
                    merged.update(chosen)
                return self.gen(merged, name, depth + 1, outermost)
        if isinstance(schema.get("allOf"), list):
            merged = _merge_all_of(self, schema)
            return self.gen(merged, name, depth + 1, outermost)
        kind = _schema_type(schema)
        if kind == "object":
            return self._object(schema, depth, outermost)
        if kind == "array":
            return self._array(schema, name, depth, outermost)
        if kind == "integer":
            return self._integer(schema, name)
        if kind == "number":
            return self._number(schema, name)
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        return self._string(schema, name)

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while isinstance(schema.get("$ref"), str) and seen < 32:
            target = _pointer(self.root, schema["$ref"])
            if not isinstance(target, dict):
                return {"type": "string"}
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **rest}
            seen += 1
        return schema

    def _object_scope(self, build: Callable[[], Any]) -> Any:
        # Each object gets its own anchor statement, so sibling objects in an array differ and a
        # question and its answer in one object come from the same statement.
        # Anchors are taken lazily so a wrapper object holding only an array does not use one up.
        saved = (self._anchor, self._offset)
        self._anchor, self._offset = None, 0
        try:
            return build()
        finally:
            self._anchor, self._offset = saved

    def _object(self, schema: dict[str, Any], depth: int, outermost: bool) -> dict[str, Any]:
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        required = schema.get("required")
        required = [r for r in required if isinstance(r, str)] if isinstance(required, list) else []

        def build() -> dict[str, Any]:
            out: dict[str, Any] = {}
            for prop, sub in props.items():
                if depth >= self.max_depth and prop not in required:
                    continue
                out[prop] = self.gen(sub, prop, depth + 1, outermost)
            for prop in required:
                if prop not in out:
                    extra = schema.get("additionalProperties")
                    sub = extra if isinstance(extra, dict) else {}
                    out[prop] = self.gen(sub, prop, depth + 1, outermost)
            return out

        return self._object_scope(build)

    def _array(self, schema: dict[str, Any], name: str, depth: int, outermost: bool) -> list[Any]:
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list):
            return [self.gen(s, name, depth + 1, False) for s in prefix]
        lo = _int_or_none(schema.get("minItems"))
        hi = _int_or_none(schema.get("maxItems"))
        if depth >= self.max_depth:
            count = lo or 0
        elif lo is not None and hi is None:
            count = max(lo, 1)
        else:
            if outermost and self.requested:
                count = self.requested
            elif lo is not None:
                count = max(lo, 1)
            else:
                count = 3 if outermost else 2
            count = max(count, lo or 0)
            if hi is not None:
                count = min(count, hi)
        item_schema = schema.get("items", {})
        item_name = _singular(name)
        return self._distinct_items(count, lambda: self.gen(item_schema, item_name, depth + 1, False))

    def _distinct_items(self, count: int, make: Callable[[], Any]) -> list[Any]:
        items: list[Any] = []
        seen: set[bytes] = set()
        for _ in range(count):
            item = make()
            for _retry in range(8):
                fp = msgspec.json.encode(item, order="sorted")
                if fp not in seen:
                    break
                item = make()
            seen.add(msgspec.json.encode(item, order="sorted"))
            items.append(item)
        return items

    def _enum(self, values: list[Any]) -> Any:
        return values[self.rng.randrange(len(values))]

    # -- scalars

    def _integer(self, schema: dict[str, Any], name: str) -> int:
        lo, hi = _bounds(schema, integer=True)
        dlo, dhi = _default_range(name)
        if lo is None and hi is None:
            lo, hi = int(dlo), int(dhi)
        elif lo is None:
            lo = hi - 10 if hi is not None and hi < 10 else 0
        elif hi is None:
            hi = lo + 10
        if hi < lo:
            return int(lo)
        value = self.rng.randint(int(lo), int(hi))
        step = schema.get("multipleOf")
        if isinstance(step, int) and step > 0:
            snapped = -(-int(lo) // step) * step
            value = snapped if snapped <= hi else value
        return value

    def _number(self, schema: dict[str, Any], name: str) -> float:
        lo, hi = _bounds(schema, integer=False)
        dlo, dhi = _default_range(name)
        if lo is None and hi is None:
            lo, hi = dlo, dhi
        elif lo is None:
            lo = min(0.0, hi - 10.0) if hi is not None else 0.0
        elif hi is None:
            hi = lo + 10.0
        if hi < lo:
            return float(lo)
        value = round(lo + (hi - lo) * self.rng.random(), 2)
        return float(min(max(value, lo), hi))

    def _string(self, schema: dict[str, Any], name: str) -> str:
        fmt = schema.get("format")
        role = _role(name)
        self._counter += 1
        if fmt in _FORMATS:
            text = _FORMATS[fmt](self, self._counter)
        else:
            text = self._text_for(role)
        return self._fit(text, schema, role)

    def _text_for(self, role: str) -> str:
        src, a = self.src, self._current_anchor()
        if role == "question":
            return self._unique(self._question_candidates(a))
        if role == "answer":
            return self._unique(_chain([src.statement(a)], (src.statement(a + k) for k in range(1, 50))))
        if role == "word":
            # A content word of this object's own statement, so labels fit the item they describe.
            words = salient(src.statement(a)) or [src.keyword(a)]
            return words[self._counter % len(words)].lower()
        if role == "title":
            words = [src.keyword(a + i) for i in range(self.rng.randint(2, 4))]
            return " ".join(w[:1].upper() + w[1:] for w in words)
        if role == "difficulty":
            return ("easy", "medium", "hard")[a % 3]
        if role == "language":
            return "en"
        if role == "id":
            return f"item-{a}-{self._counter}"
        if role == "url":
            return f"https://example.com/{src.keyword(a).lower()}"
        if role == "email":
            return f"user{self._counter}@example.com"
        self._offset += 1
        return self._unique(src.statement(a + self._offset + k) for k in range(50))

    def _current_anchor(self) -> int:
        if self._anchor is None:
            self._anchor = self.src.next_anchor()
        return self._anchor

    def _question_candidates(self, anchor: int) -> Iterable[str]:
        stmt = self.src.statement(anchor)
        keys = salient(stmt) or [self.src.keyword(anchor)]
        for key in keys:
            for t in range(len(_QUESTION_TEMPLATES)):
                yield _QUESTION_TEMPLATES[(anchor + t) % len(_QUESTION_TEMPLATES)].format(k=key)
        yield from self.src.questions

    def _unique(self, candidates: Iterable[str]) -> str:
        first = None
        for cand in candidates:
            first = first or cand
            if cand not in self.src.used:
                self.src.used.add(cand)
                return cand
        # Out of fresh material: a numbered variant is ugly but keeps array items distinct.
        base = first or "Simulated text."
        n = 2
        while f"{base} ({n})" in self.src.used:
            n += 1
        self.src.used.add(f"{base} ({n})")
        return f"{base} ({n})"

    def _fit(self, text: str, schema: dict[str, Any], role: str) -> str:
        lo = _int_or_none(schema.get("minLength")) or 0
        hi = _int_or_none(schema.get("maxLength"))
        i = 0
        while len(text) < lo:
            text = f"{text} {self.src.statement(self._current_anchor() + 1 + i)}"
            i += 1
        if hi is not None and len(text) > hi:
            suffix = "?" if role == "question" and hi > 1 else ""
            cut = text[: hi - len(suffix)]
            if " " in cut[: max(hi - len(suffix), 0)] and len(cut) > 12:
                cut = cut.rsplit(" ", 1)[0]
            cut = cut.rstrip(" ,;:?") if suffix else cut
            text = (cut + suffix)[:hi]
            if len(text) < lo:
                text = text.ljust(lo, ".")
        return text


def _chain(*parts: Iterable[str]) -> Iterable[str]:
    for part in parts:
        yield from part


def _singular(name: str) -> str:
    if name.endswith("ies"):
        return name[:-3] + "y"
    if name.endswith("s") and not name.endswith("ss"):
        return name[:-1]
    return name


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _is_null_schema(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("type") == "null"


def _schema_type(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), kind[0] if kind else None)
    if isinstance(kind, str):
        return kind
    if "properties" in schema or "additionalProperties" in schema or "required" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema or "minItems" in schema:
        return "array"
    if "minimum" in schema or "maximum" in schema:
        return "number"
    return "string"


def _merge_all_of(gen: SchemaGen, schema: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    props: dict[str, Any] = dict(merged.get("properties") or {})
    required: list[str] = list(merged.get("required") or [])
    for part in schema["allOf"]:
        if not isinstance(part, dict):
            continue
        part = gen._resolve(part)
        props.update(part.get("properties") or {})
        required.extend(r for r in part.get("required") or [] if r not in required)
        for k, v in part.items():
            if k not in ("properties", "required"):
                merged.setdefault(k, v)
    if props:
        merged["properties"] = props
    if required:
        merged["required"] = required
    return merged


def _pointer(root: Any, ref: str) -> Any:
    if not ref.startswith("#"):
        return None
    node = root
    for part in ref[1:].split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _bounds(schema: dict[str, Any], *, integer: bool) -> tuple[Any, Any]:
    lo = schema.get("minimum")
    hi = schema.get("maximum")
    lo = lo if isinstance(lo, (int, float)) and not isinstance(lo, bool) else None
    hi = hi if isinstance(hi, (int, float)) and not isinstance(hi, bool) else None
    xlo, xhi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    nudge = 1 if integer else 1e-6
    # Draft 4 spells exclusivity as booleans next to minimum/maximum; later drafts as numbers.
    if xlo is True and lo is not None:
        lo = lo + nudge
    elif isinstance(xlo, (int, float)) and not isinstance(xlo, bool):
        lo = max(lo, xlo + nudge) if lo is not None else xlo + nudge
    if xhi is True and hi is not None:
        hi = hi - nudge
    elif isinstance(xhi, (int, float)) and not isinstance(xhi, bool):
        hi = min(hi, xhi - nudge) if hi is not None else xhi - nudge
    if integer:
        lo = None if lo is None else int(-(-lo // 1))
        hi = None if hi is None else int(hi // 1)
    return lo, hi


def _default_range(name: str) -> tuple[float, float]:
    tokens = _name_tokens(name)
    if any(
        t.startswith(("confidence", "probability", "prob", "likelihood", "ratio", "share")) for t in tokens
    ):
        return 0.5, 1.0
    if any(t.startswith(("score", "rating", "grade", "quality", "stars")) for t in tokens):
        return 1, 5
    if any(t.startswith(("year",)) for t in tokens):
        return 1990, 2024
    return 1, 10


_FORMATS: dict[str, Callable[[SchemaGen, int], str]] = {
    "date": lambda g, n: f"2024-{1 + n % 12:02d}-{1 + n % 28:02d}",
    "date-time": lambda g, n: f"2024-{1 + n % 12:02d}-{1 + n % 28:02d}T12:{n % 60:02d}:00Z",
    "time": lambda g, n: f"12:{n % 60:02d}:00",
    "email": lambda g, n: f"user{n}@example.com",
    "uri": lambda g, n: f"https://example.com/{g.src.keyword(n).lower()}",
    "url": lambda g, n: f"https://example.com/{g.src.keyword(n).lower()}",
    "hostname": lambda g, n: "example.com",
    "ipv4": lambda g, n: f"192.0.2.{1 + n % 254}",
    "uuid": lambda g, n: str(uuid.UUID(int=g.rng.getrandbits(128), version=4)),
}


def _looks_like_schema(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and any(
            k in obj
            for k in ("$schema", "properties", "$defs", "definitions", "anyOf", "oneOf", "allOf", "$ref")
        )
        or (
            isinstance(obj, dict)
            and obj.get("type") in ("object", "array")
            and ("items" in obj or "properties" in obj)
        )
    )


def json_in_prompt(messages: list[dict[str, Any]]) -> tuple[Any, bool] | None:
    """A JSON Schema (True) or an example object (False) shown in the prompt, if any."""
    schemas: list[Any] = []
    examples: list[Any] = []
    decoder = json.JSONDecoder()
    for _, text in reversed(message_texts(messages)):
        for match in SCHEMA_LABEL_RE.finditer(text):
            rest = text[match.end() :].lstrip()
            if rest.startswith("```"):
                rest = rest.split("\n", 1)[-1]
            try:
                obj, _ = decoder.raw_decode(rest)
            except ValueError:
                continue
            if isinstance(obj, dict):
                schemas.append(obj)
        for block in FENCE_RE.findall(text):
            try:
                obj = json.loads(block)
            except ValueError:
                continue
            if _looks_like_schema(obj):
                schemas.append(obj)
            elif isinstance(obj, (dict, list)):
                examples.append(obj)
    if schemas:
        return schemas[0], True
    if examples:
        return examples[0], False
    return None
