"""tokenizer -> pretrain -> reward_model through the `tether` CLI on a shrunken tiny recipe, then
the checkpoints it wrote are loaded by transformers, vLLM and a RewardModelWorker."""
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
         "reward_model.max_len=128"]


def tether(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cluster.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    done = tether("run", "configs/tiny.yaml", "name=e2e", f"runs_dir={runs}", *SHORT)
    assert done.returncode == 0, done.stderr[-3000:]
    return runs / "e2e"


def test_pipeline_writes_a_complete_run(run_dir):
    for path in ["config.yaml", "tokenizer/tokenizer.json", "data/meta.json", "pretrain/metrics.jsonl",
                 "pretrain/loss.png", "pretrain/checkpoints/latest", "pretrain/model/model.safetensors",
                 "pretrain/model/tokenizer.json"]:
        assert (run_dir / path).exists(), path
    assert (run_dir / "pretrain/checkpoints/step_000040/ds").is_dir()
    assert not list(run_dir.rglob("*.tmp"))
    records = [json.loads(x) for x in (run_dir / "pretrain/metrics.jsonl").read_text().splitlines()]
    evals = [r["val/bits_per_byte"] for r in records if "val/bits_per_byte" in r]
    assert len(evals) == 3 and evals[-1] < 0.8 * evals[0]


def test_reward_model_stage_writes_metrics_and_a_servable_model(run_dir):
    from rewards.model_worker import RewardModelWorker
    from trainers.tokenizer import load_tokenizer
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
