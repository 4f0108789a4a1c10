"""The models of a document generation run, one per role: the writer of the entries, the parser that repairs
their replies, the titler of chunks, the judge (optional) and the model benchmarked."""

from __future__ import annotations

from dataclasses import dataclass

from dsetlog.generation.errors import DocGenError
from dsetlog.generation.requests import GenerateRequest
from dsetlog.llm.providers import Provider, ProviderError, resolve_spec


@dataclass
class Models:
    generate: Provider
    parse: Provider
    chunk_topics: Provider
    judge: Provider | None
    benchmark: Provider

    @classmethod
    def resolve(cls, req: GenerateRequest, *, simulator_url: str | None = None) -> Models:
        def one(spec: str) -> Provider:
            try:
                return resolve_spec(spec, simulator_url=simulator_url)
            except ProviderError as exc:
                raise DocGenError(str(exc)) from None

        return cls(one(req.classification_model), one(req.parsing_model), one(req.chunking_model),
                   one(req.judge_model) if req.judge_model else None,
                   one(req.benchmark_model or req.classification_model))
