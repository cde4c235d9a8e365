"""The `facts` built-in verifier: the claims c(y) a response makes about one attribute, checked against the
knowledge base (Part 4, "Hallucination": H(y) = 1 - V(c(y))).

A claim is any of the attribute's possible values (the sample's meta 'claims', '|'-separated) named in the
response as a whole word. V is the share of claims that are true, so H(y) = 1 - score; a response that names
none asserts nothing false (score 1) but does not pass. It passes when it names the reference answer and
nothing else."""
from __future__ import annotations

import re

from verifiers.types import Sample, Verdict


def fact_claims(sample: Sample, response: str) -> Verdict:
    values = [v for v in sample.meta.get("claims", "").split("|") if v]
    if not values or sample.answer is None:
        return Verdict.not_applicable("no claim vocabulary or reference answer on the sample")
    claims = [v for v in values if re.search(rf"\b{re.escape(v)}\b", response, re.IGNORECASE)]
    if not claims:
        return Verdict(1.0, False, "no claim")
    true = [c for c in claims if c.lower() == sample.answer.lower()]
    return Verdict(len(true) / len(claims), claims == true, f"claims {claims}, true {sample.answer}")
