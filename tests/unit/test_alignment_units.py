"""The driver-side pieces of the alignment loops, on values worked out by hand: row layout, pass@k,
RSFT's keep rule, GRPO's group filter, PPO's per-token rewards and KL controller, seeded draws, report."""

import numpy as np
import pytest
import torch

from evals.config import Criterion
from evals.report import checks_line, run_checks, stage_line, stage_metrics, write_report
from rollout.types import FinishReason, Rollout
from trainers.align_config import GrpoConfig, KeepRule, PolicyUpdateConfig, RsftConfig
from trainers.learners.rl_batches import PolicyBatch, per_token, token_rows
from trainers.loops.alignment import StepRows, minibatches, step_rows, step_tasks
from trainers.loops.grpo import group_filter, needs_reference
from trainers.loops.ppo import adaptive_kl_coef, token_rewards
from trainers.loops.sft import kept_indices


def test_token_rows_mask_the_response_targets_and_add_filler():
    tokens, mask = token_rows([[1, 2, 3], [4]], [[5, 6], [7, 8, 9]], pad_id=0, rows=3)
    assert tokens.tolist() == [[1, 2, 3, 5, 6], [4, 7, 8, 9, 0], [0, 0, 0, 0, 0]]
    # position t predicts tokens[t + 1]: row 0's response 5, 6 sits at targets 2, 3
    assert mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 0], [0, 0, 0, 0]]
    assert per_token([2.0, np.array([1.0, 2.0, 3.0]), 0.0], mask).tolist() == [[0, 0, 2, 2], [1, 2, 3, 0], [0, 0, 0, 0]]


def test_step_rows_pad_to_whole_minibatches_and_split_by_rank():
    rollouts = [Rollout([1, 2], [3], [-0.1], FinishReason.eos, 0) for _ in range(5)]
    rows = step_rows(rollouts, [1.0] * 5, pad_id=0, minibatch=4)
    assert rows.tokens.shape == (8, 3) and rows.loss_mask.sum() == 5 and rows.advantages.sum() == 5
    batch = PolicyBatch(rows.tokens, rows.loss_mask, rows.advantages, None, None, 5, 5)
    halves = batch.split(2)
    assert [h.tokens.shape[0] for h in halves] == [4, 4] and halves[1].old_logprobs is None
    with pytest.raises(ValueError, match="does not split"):
        batch.split(3)


def test_minibatches_cover_each_row_once_per_epoch_and_skip_filler():
    mask = np.zeros((8, 2), np.float32)
    mask[:5] = 1
    rows = StepRows(np.zeros((8, 3), np.int64), mask, mask.copy(), np.zeros_like(mask))
    chunks = minibatches(rows, PolicyUpdateConfig(ppo_epochs=2, minibatch_size=2), seed=0, step=3)
    real = [i for c in chunks for i in c if i < 5]
    assert sorted(real) == sorted(list(range(5)) * 2)
    assert all(mask[c].any() for c in chunks) and len(chunks) <= 8
    assert [c.tolist() for c in chunks] == [c.tolist() for c in minibatches(rows, PolicyUpdateConfig(
        ppo_epochs=2, minibatch_size=2), seed=0, step=3)]


def test_keep_rules():
    rewards = np.array([[0.0, 1.0, 1.0, 0.5],     # prompt 0: two tie for best
                        [0.0, 0.0, 0.0, 0.0]])    # prompt 1: nothing reaches min_reward
    assert kept_indices(rewards, RsftConfig(keep=KeepRule.best, min_reward=1.0)) == [1]
    assert kept_indices(rewards, RsftConfig(keep=KeepRule.top_k, top_k=3, min_reward=0.5)) == [1, 2, 3]
    assert kept_indices(rewards, RsftConfig(keep=KeepRule.passing, min_reward=0.0)) == [0, 1, 2, 3, 4, 5, 6, 7]


def test_group_filter_drops_uniform_groups_and_truncated_responses():
    rewards = np.array([[1.0, 1.0], [0.0, 1.0]])
    rollouts = [Rollout([1], [2], [0.0], reason, 0) for reason in
                (FinishReason.eos, FinishReason.eos, FinishReason.length, FinishReason.eos)]
    assert group_filter(rewards, rollouts, GrpoConfig()).tolist() == [True] * 4
    assert group_filter(rewards, rollouts, GrpoConfig(dynamic_sampling=True)).tolist() == [False, False, True, True]
    assert group_filter(rewards, rollouts, GrpoConfig(dynamic_sampling=True, overlong_filter=True)).tolist() == \
        [False, False, False, True]


def test_grpo_runs_the_reference_only_for_a_kl_term_or_an_evaluation():
    without = GrpoConfig(steps=10, eval_every=4, update=PolicyUpdateConfig(kl_coef=0.0))
    assert [s for s in range(1, 11) if needs_reference(without, s)] == [4, 8, 10]   # the evaluations, and the end
    with_kl = GrpoConfig(steps=10, eval_every=4, update=PolicyUpdateConfig(kl_coef=0.01))
    assert all(needs_reference(with_kl, s) for s in range(1, 11))


def test_ppo_token_rewards_put_the_score_on_the_last_response_token():
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    kl = torch.full((3, 4), 0.5)
    r = token_rewards(torch.tensor([2.0, -1.0, 7.0]), kl, mask, beta=0.1)
    # -0.1 * 0.5 = -0.05 per response token; the score lands on the last one; an empty row gets nothing
    assert torch.allclose(r, torch.tensor([[0.0, -0.05, 1.95, 0.0], [-0.05, -0.05, -0.05, -1.05], [0.0] * 4]))


def test_adaptive_kl_coefficient():
    assert adaptive_kl_coef(0.1, kl=2.0, target=1.0) == pytest.approx(0.1 * (1 + 0.1 * 0.2))   # clipped at +0.2
    assert adaptive_kl_coef(0.1, kl=0.9, target=1.0) == pytest.approx(0.1 * (1 - 0.1 * 0.1))
    assert adaptive_kl_coef(0.1, kl=1.0, target=1.0) == 0.1


def test_step_tasks_are_a_function_of_seed_and_step():
    tasks = list(range(100))
    assert step_tasks(tasks, 10, 0, 5) == step_tasks(tasks, 10, 0, 5)
    assert step_tasks(tasks, 10, 0, 5) != step_tasks(tasks, 10, 0, 6)
    assert len(set(step_tasks(tasks, 10, 0, 5))) == 10 and len(step_tasks(tasks, 500, 0, 1)) == 100


def test_report_tables_and_checks(tmp_path):
    import json
    (tmp_path / "grpo").mkdir()
    (tmp_path / "ppo").mkdir()
    (tmp_path / "grpo/metrics.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"step": 0, "eval/pass@1": 0.25}, {"step": 1, "reward/mean": 0.3}, {"step": 2, "eval/pass@1": 0.4}]))
    (tmp_path / "ppo/metrics.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"step": 0, "eval/reward_model_score": -1.0}, {"step": 1, "ppo/kl_per_response": 0.5},
        {"step": 2, "ppo/kl_per_response": 1.5, "eval/reward_model_score": 0.5,
         "evals/sycophancy/greedy/sycophancy": 0.375, "evals/sycophancy/greedy/prompts": 8.0}]))
    with (tmp_path / "ppo/metrics.jsonl").open("a") as f:
        f.write("\n" + json.dumps({"step": 0, "evals/sycophancy/greedy/sycophancy": 0.125,
                                    "evals/sycophancy/greedy/prompts": 8.0, "evals/sycophancy/T1/sycophancy": 0.25,
                                    "evals/sycophancy/T1/prompts": 8.0, "evals/sycophancy/T1/samples": 4.0}))
    criteria = [Criterion("grpo", "eval/pass@1", change_at_least=0.15),          # +0.15: met at the bound
                Criterion("grpo", "eval/pass@1", change_at_least=0.16),          # missed by 0.01
                Criterion("ppo", "eval/reward_model_score", end_at_least=0.5, change_at_most=1.5),
                Criterion("ppo", "eval/pass@1", change_at_least=0.0),            # never measured: missed
                Criterion("dpo", "eval/preference_accuracy", end_at_least=0.9)]  # dpo did not run: not checked
    found = stage_metrics(tmp_path, ["grpo", "ppo"])
    checks = run_checks(found, criteria, {"ppo": 1.0})
    assert [c.line() for c in checks] == [
        "met: grpo eval/pass@1 0.25 -> 0.4 (+0.15); criterion: change >= +0.15",
        "MISSED: grpo eval/pass@1 0.25 -> 0.4 (+0.15); criterion: change >= +0.16",
        "met: ppo eval/reward_model_score -1 -> 0.5 (+1.5); criterion: change <= +1.5 and end >= 0.5",
        "MISSED: ppo eval/pass@1 was not measured; criterion: change >= +0",
        "MISSED: ppo largest KL per response 1.500 nats; criterion: at most 1 nats"]
    assert checks_line(checks) == ("checks: 2 met, 3 MISSED (grpo eval/pass@1 0.25 -> 0.4 (+0.15); "
                                   "ppo eval/pass@1 was not measured; ppo largest KL per response 1.500 nats)")
    assert run_checks(found, [], {"ppo": 1.5})[0].met                               # the bound is inclusive
    text = write_report(tmp_path, found, {"grpo": 10.0, "ppo": 5.5}, checks).read_text()
    assert "| grpo | eval/pass@1 | 0.25 | 0.4 | +0.15 |" in text and "| total | | 15.5 |" in text
    assert text.splitlines()[4] == "| grpo | eval/pass@1 0.25 -> 0.4 (+0.15) | 10.0 |"      # the summary opens it
    assert text.index("## Curves") < text.index("## Checks") < text.index("## Held-out measures")
    assert "- MISSED: grpo eval/pass@1 0.25 -> 0.4 (+0.15); criterion: change >= +0.16" in text
    assert checks_line(checks) in text
    assert stage_line(tmp_path, "grpo", 10.0) == "[grpo] eval/pass@1 0.25 -> 0.4 (+0.15), 10.0 s"
    assert stage_line(tmp_path, "tokenizer", 3.0) == "[tokenizer] 3.0 s"
    assert "| ppo | evals/sycophancy/greedy/sycophancy | 0.375 | 0.125 | -0.25 |" in text
    assert "evals/sycophancy/greedy/prompts" not in text and "evals/sycophancy/T1/samples" not in text
    assert "| ppo | evals/sycophancy/T1/sycophancy | 0.25 | 0.25 | +0 |" in text


def test_the_report_tabulates_tool_use_per_stage_evaluated_with_tools(tmp_path):
    tools = {"eval/tools/well_formed_share": 0.5, "eval/tools/tool_calls": 1.25, "eval/tools/tool_errors": 0.25,
             "eval/tools/turns": 2.0, "eval/tools/verifier/answer/mean_score": 0.125}
    found = {"pretrain": [{"step": 0, "val/loss": 3.0}],
             "sft": [{"step": 0, "eval/pass@1": 0.0, "eval/tools/pass@1": 0.0, **tools},
                     {"step": 9, "eval/pass@1": 0.0625, "eval/tools/pass@1": 0.375, **tools,
                      "eval/tools/well_formed_share": 0.96875, "eval/verifier/answer/mean_score": 0.5}],
             "grpo": [{"step": 0, "eval/pass@1": 0.25}]}                        # evaluated without tools: no row
    text = write_report(tmp_path, found, {}, []).read_text()
    assert ("| stage | pass@1, one turn (no tool answers) | pass@1 with the tools | well-formed calls | "
            "tool calls per episode | tool errors per episode | model turns per episode |") in text
    assert "| sft | 0 -> 0.0625 | 0 -> 0.375 | 0.5 -> 0.969 | 1.25 -> 1.25 | 0.25 -> 0.25 | 2 -> 2 |" in text
    assert "| grpo | 0.25" not in text.split("## Tool use, held out")[1].split("## Held-out")[0]
    assert "| sft | eval/verifier/answer/mean_score | 0.5 | 0.5 | +0 |" in text
    assert "| sft | eval/tools/verifier/answer/mean_score | 0.125 | 0.125 | +0 |" in text
    assert "Tool use" not in write_report(tmp_path, {"grpo": found["grpo"]}, {}, []).read_text()


def test_generated_tasks_carry_the_answer_and_optionally_the_worked_steps():
    from data.config import TaskSource
    from data.tasks import load_samples
    options = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
    worked = load_samples(TaskSource(count=3, options=options), seed=4)
    bare = load_samples(TaskSource(count=3, options=options, worked=False), seed=4)
    for (sample, steps), (same, final) in zip(worked, bare):
        a, op, b = sample.prompt.rsplit(":", 1)[1].strip(" =").split()
        value = int(a) + int(b) if op == "+" else int(a) - int(b)
        assert sample == same and sample.answer == str(value)
        assert steps == f"{a} {op} {b} = {value}\n#### {value}" and final == f"#### {value}"
