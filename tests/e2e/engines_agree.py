"""Loads one HF checkpoint in vLLM and in transformers (the reference KV-cache engine) and prints
whether greedy continuations agree token for token. Its own process: vLLM takes over torch threads."""
import json
import os
import sys

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

if __name__ == "__main__":
    from vllm import LLM, SamplingParams

    from data.tokenizer import load_tokenizer
    from modeling.model import load_causal_lm
    from rollout.reference_engine import generate
    from rollout.types import Sampling

    checkpoint, prompts = sys.argv[1], json.loads(sys.argv[2])
    tokenizer = load_tokenizer(checkpoint)
    prompt_ids = [tokenizer(p)["input_ids"] for p in prompts]
    model = load_causal_lm(checkpoint).eval()
    reference = [generate(model, ids, Sampling(temperature=0, max_new_tokens=24), tokenizer.eos_token_id)
                 for ids in prompt_ids]
    llm = LLM(model=checkpoint, dtype="float32", enforce_eager=True, seed=0, max_model_len=128)
    outs = llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids],
                        SamplingParams(temperature=0.0, max_tokens=24), use_tqdm=False)
    vllm_ids = [list(o.outputs[0].token_ids) for o in outs]
    print(json.dumps({"reference": reference, "vllm": vllm_ids,
                      "text": [tokenizer.decode(ids) for ids in vllm_ids]}))
