"""Passes when the response cites the row's `source` field as [source]."""
from verifiers.types import Sample, Verdict


def has_citation(sample: Sample, response: str) -> Verdict:
    source = sample.meta.get("source")
    if not source:
        return Verdict.not_applicable("the row names no source")
    cited = f"[{source}]" in response
    return Verdict(float(cited), cited, f"cites [{source}]" if cited else f"no [{source}] in the response")
