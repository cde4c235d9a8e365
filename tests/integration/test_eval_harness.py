"""`tether eval` on real Ray roles: vLLM rollout workers generate, verifier workers judge. Its measures must equal
what the verifier functions give on the logged responses in this process, and each RAG prompt must hold the
chunks its provenance names."""
import json

import numpy as np
import pytest

from cluster.cli import main
from data.knowledge import KnowledgeConfig, fact_samples, make_knowledge_base
from evals.harness import fact_measures, math_measures, sycophancy_measures
from verifiers.facts import fact_claims
from verifiers.math_answers import math_answer
from verifiers.types import Sample


def test_tether_eval_measures_match_the_logged_responses(ray_cluster, tiny_corpus, tmp_path):
    out = tmp_path / "eval"
    kb = KnowledgeConfig(people=4, practice_people=8)
    code = main(["eval", str(tiny_corpus / "init"), "--suite", "arith,facts,sycophancy", "--k", "1,2", "--out", str(out),
                 "eval.prompts=6", "eval.samples=2", "eval.temperatures=[1.0]", "eval.max_new_tokens=8",
                 "eval.modes=[zero_shot,cot_few_shot]", "eval.shots=2", "eval.rag.enabled=true",
                 "eval.rag.retriever=bm25", "eval.rag.top_k=2", f"eval.facts.people={kb.people}",
                 f"eval.facts.practice_people={kb.practice_people}", "rollout.cpus_per_worker=0.5",
                 "verifier_pool.cpus_per_worker=0.25"])
    assert code == 0
    rows = json.loads((out / "eval.json").read_text())["rows"]
    settings = [(r["suite"], r["mode"], r["rag"], r["temperature"]) for r in rows]
    assert settings == [(s, m, rag, t) for s, m, rag in [("arith", "zero_shot", False), ("arith", "cot_few_shot", False),
                                                         ("facts", "zero_shot", False), ("facts", "zero_shot", True),
                                                         ("sycophancy", "zero_shot", False)] for t in (0.0, 1.0)]
    assert (out / "eval.png").stat().st_size > 0 and "| suite |" in (out / "eval.md").read_text()

    logged = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    facts = {s.id: s for s in fact_samples(make_knowledge_base(kb))}
    for row in rows:
        items = [x for x in logged if (x["suite"], x["mode"], x["rag"], x["temperature"]) ==
                 (row["suite"], row["mode"], row["rag"], row["temperature"])]
        assert len(items) == row["prompts"] == 6 and all(len(x["responses"]) == row["samples"] for x in items)
        responses = [x["responses"] for x in items]
        correct = np.array([[math_answer(Sample("", x["answer"]), r).passed for r in x["responses"]] for x in items])
        if row["suite"] == "arith":
            want = math_measures(correct, [1, 2])
            assert set(want) == ({"pass@1"} if row["temperature"] == 0 else {"pass@1", "pass@2"})
        elif row["suite"] == "sycophancy":
            agreed = np.array([[math_answer(Sample("", x["asserted"]), r).passed for r in x["responses"]] for x in items])
            assert all(x["prompt"].startswith(f"I think the answer is {x['asserted']}. ") for x in items)
            want = sycophancy_measures(agreed, correct)
        else:
            verdicts = [[fact_claims(facts[x["id"]], r) for r in rs] for x, rs in zip(items, responses)]
            want = fact_measures(np.array([[v.score for v in vs] for vs in verdicts]),
                                 np.array([[v.passed for v in vs] for vs in verdicts]),
                                 np.array([[v.reason != "no claim" for v in vs] for vs in verdicts]),
                                 np.array([facts[x["id"]].meta["stated"] == "yes" for x in items]))
            for x in items:
                assert len(x["chunks"]) == (2 if row["rag"] else 0)
                if row["rag"]:   # bm25 puts the person's own document first: the prompt holds it, and what was logged
                    assert x["prompt"].startswith("Context:\n[1] " + make_knowledge_base(kb).document(x["id"].split("/")[0]))
        assert row["measures"] == pytest.approx(want, abs=1e-12)
