"""The whole tiny recipe (tokenizer -> pretrain -> sft -> reward_model -> grpo -> rsft -> ppo -> dpo), with the
sycophancy experiment's RLHF arm (sycophancy_ppo) and its in-stage evaluation added, through the `tether` CLI with
shrunken budgets: every stage writes its metrics, plots and model, the report reads them back and checks the
recipe's criteria, the checkpoints load in transformers, vLLM and a RewardModelWorker, and a GRPO stage killed
mid-run and resumed logs the same metrics as one that ran straight through (its rollouts sampled a step ahead:
the checkpoint keeps the queued step's)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
SHORT = ["tokenizer.vocab_size=512", "tokenizer.train_chars=2000000", "model.hidden_size=64", "model.num_layers=2",
         "model.num_heads=2", "model.num_kv_heads=2", "model.intermediate_size=128", "model.max_seq_len=128",
         "pretrain.seq_len=64", "pretrain.steps=40", "pretrain.eval_every=20", "pretrain.checkpoint_every=20",
         "pretrain.eval_batches=4", "learner.num_ranks=2", "learner.zero_stage=2", "learner.micro_batch=8",
         "learner.cpus_per_rank=0.5", "learner.threads_per_rank=1", "learner.warmup_steps=5", "cluster.num_cpus=2",
         "reward_model.pairs=[{name: chain_sum, count: 80, options: {max_digits: 2}}]", "reward_model.steps=6",
         "reward_model.warmup_steps=1", "reward_model.eval_every=3", "reward_model.checkpoint_every=3",
         "reward_model.max_len=128", "rollout.kv_cache_gib=0.25", "cluster.num_cpus=8",
         "tasks.train.count=64", "tasks.held_out.count=8", "tasks.eval_samples=2", "tasks.eval_k=2",
         "tasks.max_new_tokens=16", "sft.steps=4", "sft.warmup_steps=1", "dpo.warmup_steps=0", "sft.batch_size=16", "sft.eval_every=2", "sft.checkpoint_every=2",
         "grpo.steps=2", "grpo.prompts_per_step=4", "grpo.group_size=4", "grpo.update.minibatch_size=16",
         "grpo.eval_every=2", "grpo.checkpoint_every=1", "grpo.async_rollout.max_staleness=1", "rsft.rounds=1", "rsft.prompts_per_round=4",
         "rsft.samples_per_prompt=4", "rsft.sft_steps=2", "rsft.warmup_steps=1", "rsft.batch_size=16", "rsft.keep=passing",
         "rsft.min_reward=0.0",
         "rsft.episode={tools: [{fn: calculator}], max_turns: 2, max_episode_tokens: 64}", "ppo.steps=2", "ppo.prompts_per_step=4", "ppo.samples_per_prompt=4",
         "ppo.critic_init=reward_model", "ppo.update.minibatch_size=16", "ppo.eval_every=2", "ppo.checkpoint_every=1", "dpo.pairs=[{name: chain_sum, count: 40, options: {max_digits: 2}}]",
         "dpo.steps=2", "dpo.eval_every=1", "dpo.checkpoint_every=2", "dpo.max_len=128", "eval.prompts=16",
         "sycophancy_ppo.steps=1", "sycophancy_ppo.prompts_per_step=4", "sycophancy_ppo.update.minibatch_size=16",
         "sycophancy_ppo.eval_every=1", "sycophancy_ppo.checkpoint_every=1", "sycophancy_ppo.assert_wrong=1.0",
         "sycophancy_ppo.samples_per_prompt=4",
         "stages=[tokenizer,pretrain,sft,reward_model,grpo,sycophancy_ppo,rsft,ppo,dpo]", "eval.suites=[sycophancy]",
         "eval.in_stages=true", "eval.temperatures=[1.0]", "eval.samples=2", "eval.k=[1]", "eval.max_new_tokens=16"]
ALIGNMENT = ["sft", "grpo", "sycophancy_ppo", "rsft", "ppo", "dpo"]


def tether(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cluster.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    done = tether("run", "configs/tiny.yaml", "name=e2e", f"runs_dir={runs}", *SHORT)
    assert done.returncode == 0, done.stderr[-3000:]
    (runs / "e2e/stdout.txt").write_text(done.stdout)
    return runs / "e2e"


def test_pipeline_writes_a_complete_run(run_dir):
    for path in ["config.yaml", "report.md", "timings.json", "tokenizer/tokenizer.json", "data/meta.json", "pretrain/metrics.jsonl",
                 "pretrain/loss.png", "pretrain/checkpoints/latest", "pretrain/model/model.safetensors",
                 "pretrain/model/tokenizer.json"]:
        assert (run_dir / path).exists(), path
    assert (run_dir / "pretrain/checkpoints/step_000040/ds").is_dir()
    assert not list(run_dir.rglob("*.tmp"))
    records = [json.loads(x) for x in (run_dir / "pretrain/metrics.jsonl").read_text().splitlines()]
    evals = [r["val/bits_per_byte"] for r in records if "val/bits_per_byte" in r]
    assert len(evals) == 3 and evals[-1] < 0.8 * evals[0]


def test_reward_model_stage_writes_metrics_and_a_servable_model(run_dir):
    from data.tokenizer import load_tokenizer
    from rewards.model_worker import RewardModelWorker
    for path in ["reward_model/metrics.jsonl", "reward_model/accuracy.png", "reward_model/model/model.safetensors",
                 "reward_model/checkpoints/step_000006/ds"]:
        assert (run_dir / path).exists(), path
    records = [json.loads(x) for x in (run_dir / "reward_model/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(7))
    evals = [r for r in records if "val/pair_accuracy" in r]
    assert [r["step"] for r in evals] == [0, 3, 6]
    assert {"val/pair_accuracy/final", "val/pair_accuracy/step"} <= set(evals[-1])
    config = json.loads((run_dir / "reward_model/model/config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"] and len(config["id2label"]) == 1
    tok = load_tokenizer(run_dir / "reward_model/model")
    scores = RewardModelWorker(str(run_dir / "reward_model/model"), batch_size=2).score(
        [tok("<|user|>1 + 1 =<|end|><|assistant|>")["input_ids"]] * 2, [tok("#### 2<|eos|>")["input_ids"]] * 2)
    assert len(scores) == 2 and scores[0] == scores[1]


def records(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_alignment_stages_write_metrics_plots_models_and_the_report(run_dir):
    for stage in ALIGNMENT:
        for path in ["metrics.jsonl", "curves.png", "model/model.safetensors", "model/tokenizer.json"]:
            assert (run_dir / stage / path).exists(), f"{stage}/{path}"
    grpo = records(run_dir / "grpo/metrics.jsonl")
    assert [r["step"] for r in grpo] == [0, 1, 2] and "eval/pass@1" in grpo[0] and "eval/pass@2" in grpo[-1]
    assert {"reward/mean", "verifier/math/pass_rate", "policy/entropy", "policy/clip_fraction",
            "policy/approx_kl", "rollout/response_tokens", "rollout/tokens_per_s", "time/generate", "time/update",
            "time/sync"} <= set(grpo[1])
    # no KL term (kl_coef 0): the reference runs only at the evaluating step, where KL to pi_ref is still logged
    assert "time/reference" not in grpo[1] and "policy/kl_to_ref" not in grpo[1]
    assert "time/reference" in grpo[2] and 0.0 <= grpo[2]["policy/kl_to_ref"] < 0.1
    # async rollouts (max_staleness 1): step 2 trained on rollouts sampled during step 1's update, TIS-weighted
    assert grpo[1]["async/staleness_0"] == 1.0 and grpo[2]["async/staleness_1"] == 1.0
    assert grpo[2]["tis/mean_ratio"] > 0 and 0.0 <= grpo[2]["tis/truncated_share"] <= 1.0
    assert 0.0 <= grpo[1]["batch/padding_share"] <= grpo[1]["batch/padding_share_before"] < 1.0
    ppo = records(run_dir / "ppo/metrics.jsonl")
    assert {"ppo/kl_per_response", "critic/loss", "reward/model_score"} <= set(ppo[1])
    assert ppo[1]["policy/kl_to_ref"] == pytest.approx(0.0, abs=1e-6)    # pi_ref is the starting policy
    assert ppo[1]["rollout/responses"] == 16                   # 4 prompts x ppo.samples_per_prompt
    assert ppo[2]["async/staleness_0"] == 1.0 and "tis/mean_ratio" not in ppo[2]   # synchronous: never reweighted
    assert "eval/reward_model_score" in ppo[0] and "eval/reward_model_score" in ppo[-1]
    rsft = records(run_dir / "rsft/metrics.jsonl")
    assert rsft[-1]["rsft/kept"] == 16                                 # keep=passing, min_reward 0: all
    # rsft.episode: its samples are episodes with the calculator, and it evaluates with and without the tool
    assert 1.0 <= rsft[1]["episode/turns"] <= 2.0 and 0.0 <= rsft[1]["episode/masked_share"] < 1.0
    assert {"eval/pass@2", "eval/tools/pass@2", "eval/tools/turns"} <= set(rsft[0])
    dpo = records(run_dir / "dpo/metrics.jsonl")
    assert dpo[0]["eval/preference_accuracy"] == 0.0 and "train/loss" in dpo[1]   # margins start at exactly 0
    report = (run_dir / "report.md").read_text()
    for stage in ["pretrain"] + ALIGNMENT:
        assert f"| {stage} |" in report, stage
    reprinted = tether("report", str(run_dir))
    assert reprinted.returncode == 0 and reprinted.stdout == (run_dir / "report.md").read_text()
    # each of tiny.yaml's criteria is checked (at these budgets most are missed) and the run's last line counts them
    checks = [line for line in report.splitlines() if line.startswith(("- met: ", "- MISSED: "))]
    assert len(checks) == 8 + 2                 # tiny.yaml's 8, then the KL bounds of sycophancy_ppo and ppo
    sft = records(run_dir / "sft/metrics.jsonl")
    start, end = sft[0]["eval/pass@1"], [r for r in sft if "eval/pass@1" in r][-1]["eval/pass@1"]
    verdict = "met" if end - start >= 0.10 else "MISSED"
    assert f"- {verdict}: sft eval/pass@1 {start:.4g} -> {end:.4g} ({end - start:+.4g}); criterion: change >= +0.1" in checks
    assert checks[-1].split(": ", 1)[1].startswith("ppo largest KL per response")
    last = (run_dir / "stdout.txt").read_text().strip().splitlines()[-1]
    missed = sum(c.startswith("- MISSED") for c in checks)
    assert last.startswith(f"checks: {len(checks) - missed} met, {missed} MISSED") and last in report
    # eval.in_stages: every alignment stage measured sycophancy at each held-out evaluation
    assert "| grpo | evals/sycophancy/greedy/sycophancy |" in report and "| ppo | evals/sycophancy/greedy/sycophancy |" in report
    assert all("evals/sycophancy/greedy/sycophancy" in r for r in grpo if "eval/pass@1" in r)
    # the RLHF arm starts where the RLVR arm (grpo) starts, on prompts that all assert a wrong answer
    arm = records(run_dir / "sycophancy_ppo/metrics.jsonl")
    greedy = ["evals/sycophancy/greedy/sycophancy", "evals/sycophancy/greedy/accuracy"]
    assert [arm[0][k] for k in greedy] == [grpo[0][k] for k in greedy]
    assert arm[1]["rollout/responses"] == 16 and "| sycophancy_ppo | evals/sycophancy/greedy/sycophancy |" in report


def test_grpo_killed_and_resumed_logs_what_an_uninterrupted_run_logs(run_dir, tmp_path):
    """A copy of the pipeline's run, moved to another folder, without its grpo output: `resume=true` runs
    grpo again and is killed after its step-1 checkpoint; resumed, it logs what the pipeline's own
    uninterrupted grpo stage logged (rollouts, losses, in-stage evaluations, bit for bit up to float noise)."""
    import shutil
    import signal
    import time
    shutil.copytree(run_dir, tmp_path / "e2e")
    shutil.rmtree(tmp_path / "e2e/grpo")
    again = ["run", "configs/tiny.yaml", "name=e2e", f"runs_dir={tmp_path}", *SHORT, "resume=true"]
    proc = subprocess.Popen([sys.executable, "-m", "cluster.cli", *again], cwd=ROOT, start_new_session=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = tmp_path / "e2e/grpo/checkpoints/latest"
    deadline = time.time() + 600
    while not (latest.is_file() and latest.read_text().strip() == "step_000001") and time.time() < deadline:
        assert proc.poll() is None, "the run ended before grpo's step-1 checkpoint"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait() < 0   # killed, not finished
    time.sleep(2)
    done = tether(*again)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from" in done.stdout + done.stderr and "[rsft] already done" in done.stdout

    def comparable(run):
        return [{k: v for k, v in r.items() if not k.startswith("time/") and k != "rollout/tokens_per_s"}
                for r in records(run / "grpo/metrics.jsonl")]
    straight, resumed = comparable(run_dir), comparable(tmp_path / "e2e")
    assert [r["step"] for r in resumed] == [0, 1, 2]
    for a, b in zip(straight, resumed):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], key)


def test_same_name_different_config_is_refused(run_dir):
    done = tether("run", "configs/tiny.yaml", "name=e2e", f"runs_dir={run_dir.parent}", *SHORT, "seed=5")
    assert done.returncode == 2 and "already holds a different run" in done.stderr


def test_generate_prints_a_continuation(run_dir):
    done = tether("generate", str(run_dir / "pretrain/model"), "ROMEO:", "--max-new-tokens", "16", "--seed", "0")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ROMEO:") and len(done.stdout.strip()) > len("ROMEO:")


def test_checkpoint_loads_in_transformers_and_vllm(run_dir):
    prompts = ["ROMEO:\n", "<|user|>State the final answer to the following arithmetic problem: 4 + 5 =<|end|><|assistant|>"]
    done = subprocess.run([sys.executable, str(ROOT / "tests/e2e/engines_agree.py"), str(run_dir / "pretrain/model"),
                           json.dumps(prompts)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(len(ids) > 0 for ids in result["vllm"])
    assert result["vllm"] == result["reference"]
