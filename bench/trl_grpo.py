"""TRL's GRPOTrainer on the same GRPO work as tether's stage, for bench/grpo_vs_trl.py to compare against.

    .venv-trl/bin/python bench/trl_grpo.py --model DIR --prompts FILE.jsonl --steps S --prompts-per-step P \
        --group-size G --max-new-tokens L --temperature 1.0 --lr 1e-5 --bf16 {0,1} --out result.json [--seed 0]
        [--attn-implementation sdpa|eager]

Runs in its own venv (bench/trl-requirements.txt), never imports tether. Each optimizer step takes the next P rows
of FILE.jsonl in file order (wrapping around), samples G completions of at most L new tokens for each with TRL's own
generation (transformers `generate`), scores them with the `#### N` answer check below and takes one optimizer
step on them: on-policy (num_iterations=1, steps_per_generation=1), beta=0 (no reference model), constant lr.

Measured per step: wall seconds between consecutive optimizer steps (a callback's on_step_end, so generation,
scoring, the loss and the optimizer all count); seconds inside TRL's generation call and the completion tokens it
returned (up to and including EOS, as TRL keeps them); TRL's logged mean reward. The summary's medians and rollout
tokens/s leave out step 1, which pays for warm-up. The prompts' text is what TRL tokenizes; the result says whether
that tokenization equals each row's prompt_ids."""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model and tokenizer are local; never reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import transformers  # noqa: E402
import trl  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import AutoTokenizer, TrainerCallback  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

FINAL_ANSWER = re.compile(r"####\s*(-?[\d,]+)")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="HF causal-LM directory with its tokenizer")
    p.add_argument("--prompts", required=True, help="jsonl rows {prompt_ids, prompt, answer}")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--prompts-per-step", type=int, required=True)
    p.add_argument("--group-size", type=int, required=True)
    p.add_argument("--max-new-tokens", type=int, required=True)
    p.add_argument("--min-new-tokens", type=int, default=0, help="= max-new-tokens fixes the completion length")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--bf16", type=int, choices=(0, 1), default=0)
    p.add_argument("--beta", type=float, default=0.0, help="KL coefficient; above 0 TRL loads a reference model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch threads (the machine has 2 cores)")
    # TRL's documented speed options, for finding its best settings on this machine.
    p.add_argument("--gradient-checkpointing", type=int, choices=(0, 1), default=0,
                   help="TRL defaults to 1; it trades compute for memory, which a 6M model does not need")
    p.add_argument("--torch-compile", type=int, choices=(0, 1), default=0)
    p.add_argument("--attn-implementation", default="sdpa", choices=("sdpa", "eager"),
                   help="transformers' attention for the policy (eager: explicit scores, faster backwards on the CPU)")
    p.add_argument("--cache-implementation", default=None, help="generate's KV cache, e.g. static (default dynamic)")
    p.add_argument("--continuous-batching", type=int, choices=(0, 1), default=0,
                   help="transformers' continuous-batching generate_batch instead of generate")
    p.add_argument("--out", required=True, help="result JSON")
    return p.parse_args()


def load_rows(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def final_number(text: str) -> int | None:
    """The last `#### N` number in text, commas dropped; None if there is none."""
    found = FINAL_ANSWER.findall(text)
    digits = found[-1].replace(",", "") if found else ""
    return int(digits) if digits.lstrip("-").isdigit() else None


def answer_reward(completions: list[str], answer: list[str], **_) -> list[float]:
    """1.0 where the completion's last `#### N` equals the row's answer as an integer, else 0.0.

    TRL passes each dataset column (here `answer`) as a keyword, one value per completion."""
    scores = []
    for text, expected in zip(completions, answer):
        got = final_number(text)
        scores.append(float(got is not None and got == final_number(f"#### {expected}")))
    return scores


def tokenization_check(tokenizer, rows: list[dict]) -> dict:
    """Whether TRL's tokenization of each text prompt (it calls the tokenizer on the plain strings) is prompt_ids."""
    ids = tokenizer(text=[r["prompt"] for r in rows])["input_ids"]
    bad = [i for i, (mine, row) in enumerate(zip(ids, rows)) if list(mine) != row["prompt_ids"]]
    first = {"row": bad[0], "trl": list(ids[bad[0]]), "prompt_ids": rows[bad[0]]["prompt_ids"]} if bad else None
    return {"rows": len(rows), "mismatched": len(bad), "first_mismatch": first}


class TimedGRPOTrainer(GRPOTrainer):
    """Records the seconds and completion tokens of each call to TRL's generation step.

    `_generate_single_turn` is where the installed TRL (1.16) samples completions for token ids, through
    `generate`, `generate_batch` or vLLM; tokenizing prompts, decoding and scoring happen outside it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rollouts: list[tuple[float, int]] = []

    def _generate_single_turn(self, *args, **kwargs):
        start = time.perf_counter()
        completion_ids, logprobs = super()._generate_single_turn(*args, **kwargs)
        self.rollouts.append((time.perf_counter() - start, sum(len(ids) for ids in completion_ids)))
        return completion_ids, logprobs


class StepClock(TrainerCallback):
    """One record per optimizer step: wall seconds since the previous step (or since training began), the
    generation seconds and tokens of that step's rollouts, and the mean reward TRL logs for it."""

    def __init__(self, trainer: TimedGRPOTrainer):
        self.trainer = trainer
        self.steps: list[dict] = []
        self.last = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.last = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        rollouts, self.trainer.rollouts = self.trainer.rollouts, []
        self.steps.append({"step": state.global_step, "seconds": now - self.last,
                           "generate_s": sum(s for s, _ in rollouts),
                           "completion_tokens": sum(n for _, n in rollouts), "reward_mean": None})
        self.last = now

    def on_log(self, args, state, control, logs=None, **kwargs):
        # logging_steps=1, so each log after a step carries that step's reward; the final summary log has none.
        if logs and "reward" in logs and self.steps and self.steps[-1]["step"] == state.global_step:
            self.steps[-1]["reward_mean"] = logs["reward"]


def build_config(a: argparse.Namespace, output_dir: str) -> GRPOConfig:
    batch = a.prompts_per_step * a.group_size
    return GRPOConfig(
        output_dir=output_dir, max_steps=a.steps, seed=a.seed, use_cpu=True, bf16=bool(a.bf16),
        # One generation batch of P x G completions per optimizer step, used once (on-policy).
        per_device_train_batch_size=batch, gradient_accumulation_steps=1, steps_per_generation=1,
        num_iterations=1, num_generations=a.group_size, max_completion_length=a.max_new_tokens,
        temperature=a.temperature, beta=a.beta, shuffle_dataset=False,  # prompts in file order, as tether takes them
        learning_rate=a.lr, lr_scheduler_type="constant", warmup_steps=0,
        gradient_checkpointing=bool(a.gradient_checkpointing), torch_compile=bool(a.torch_compile),
        cache_implementation=a.cache_implementation, use_transformers_continuous_batching=bool(a.continuous_batching),
        logging_steps=1, report_to="none", save_strategy="no", eval_strategy="no", disable_tqdm=True,
        dataloader_num_workers=0, model_init_kwargs={"attn_implementation": a.attn_implementation},
        generation_kwargs={"min_new_tokens": a.min_new_tokens} if a.min_new_tokens else None,
    )


def settings(config: GRPOConfig) -> dict:
    """The GRPOConfig fields that decide the work and the update, so the other side can be matched to them."""
    keys = ["per_device_train_batch_size", "gradient_accumulation_steps", "steps_per_generation", "num_iterations",
            "num_generations", "max_completion_length", "temperature", "top_p", "top_k", "beta", "epsilon",
            "loss_type", "scale_rewards", "mask_truncated_completions", "learning_rate", "lr_scheduler_type",
            "optim", "weight_decay", "max_grad_norm", "adam_beta1", "adam_beta2", "bf16", "gradient_checkpointing",
            "torch_compile", "cache_implementation", "use_transformers_continuous_batching", "use_vllm",
            "shuffle_dataset", "seed", "generation_kwargs", "model_init_kwargs"]
    values = {k: getattr(config, k) for k in keys}
    return {k: v if isinstance(v, (int, float, str, bool, type(None))) else str(v) for k, v in values.items()}


def summary(steps: list[dict]) -> dict:
    timed = steps[1:] or steps  # step 1 pays for warm-up; a 1-step run has nothing else to report
    gen_s = sum(s["generate_s"] for s in timed)
    return {"median_step_s": statistics.median(s["seconds"] for s in timed),
            "median_generate_s": statistics.median(s["generate_s"] for s in timed),
            "rollout_tokens_per_s": sum(s["completion_tokens"] for s in timed) / gen_s if gen_s else None}


def main() -> None:
    a = parse_args()
    torch.set_num_threads(a.threads)
    rows = load_rows(a.prompts)
    needed = a.steps * a.prompts_per_step
    if len(rows) < needed:
        print(f"note: {len(rows)} prompts for {needed} prompt slots; TRL wraps around the file")
    tokenizer = AutoTokenizer.from_pretrained(a.model)
    # Plain strings (not chat messages): the text already carries the chat markers, so TRL must not template it.
    dataset = Dataset.from_list([{"prompt": r["prompt"], "answer": str(r["answer"])} for r in rows])
    with tempfile.TemporaryDirectory() as output_dir:  # TRL wants one; nothing is saved there
        config = build_config(a, output_dir)
        trainer = TimedGRPOTrainer(model=a.model, reward_funcs=answer_reward, args=config,
                                   train_dataset=dataset, processing_class=tokenizer)
        clock = StepClock(trainer)
        trainer.add_callback(clock)
        start = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - start
    result = {"trl_version": trl.__version__, "transformers_version": transformers.__version__,
              "torch_version": torch.__version__, "torch_threads": torch.get_num_threads(), "bf16": bool(a.bf16),
              "steps": clock.steps, **summary(clock.steps), "train_s": total,
              "tokenization": tokenization_check(tokenizer, rows), "settings": settings(config)}
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "steps"}, indent=2))


if __name__ == "__main__":
    main()
