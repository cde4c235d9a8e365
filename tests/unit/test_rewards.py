"""The reward rubric, the HTTP reward endpoint client and the RewardModelWorker, without Ray."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

from rewards.config import HttpRewardConfig, Normalization
from rewards.model_worker import HttpRewardModel, RewardEndpointError, RewardModelWorker
from rewards.rubric import normalize_rewards, pass_rates, rubric_rewards
from verifiers.types import Verdict


def test_rubric_weights_applicable_verdicts_and_marks_the_rest():
    verdicts = [[Verdict(1.0, True), Verdict(0.5, False)],
                [Verdict.not_applicable("no answer"), Verdict(1.0, True)]]
    out = rubric_rewards([1.0, 0.2], verdicts, model_scores=[0.3, -1.0], model_weight=2.0)
    assert out[0].total == pytest.approx(1.0 + 0.2 * 0.5 + 2.0 * 0.3)
    assert out[1].total == pytest.approx(0.2 * 1.0 - 2.0)   # the n/a verifier adds nothing
    assert out[1].scores == [None, 1.0, -1.0] and out[1].passed == [None, True, None]
    assert out[1].reasons[0] == "n/a: no answer"
    rates = pass_rates(out, ["math", "format"])
    assert rates["verifier/math/pass_rate"] == 1.0 and rates["verifier/math/not_applicable"] == 0.5
    assert rates["verifier/format/pass_rate"] == 0.5
    assert rates["verifier/math/mean_score"] == 1.0 and rates["verifier/format/mean_score"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="2 verdicts for 3 weighted"):
        rubric_rewards([1.0, 1.0, 1.0], verdicts)


def test_batch_normalisation():
    z = normalize_rewards(np.array([1.0, 2.0, 3.0]), Normalization.batch)
    assert z.tolist() == pytest.approx([-1.2247, 0.0, 1.2247], abs=1e-3)
    assert normalize_rewards(np.array([1.0, 2.0]), Normalization.none).tolist() == [1.0, 2.0]


class Endpoint:
    """A local reward server: score = len(response); fails the first `failures` requests with 503,
    or sleeps `delay` seconds per request."""

    def __init__(self, failures=0, delay=0.0, status=503):
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                outer.requests += 1
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if outer.requests <= failures:
                    self.send_error(status)
                    return
                time.sleep(delay)
                reply = json.dumps({"scores": [len(r) for r in body["responses"]]}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/score"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def test_http_reward_batches_and_retries_server_errors():
    server = Endpoint(failures=2)
    try:
        rm = HttpRewardModel(HttpRewardConfig(url=server.url, retries=3, batch_size=2, timeout_s=5), backoff_s=0.01)
        assert rm.score(["p"] * 3, ["a", "bb", "ccc"]) == [1.0, 2.0, 3.0]
        assert server.requests == 2 + 2  # two 503s, then two batches
    finally:
        server.close()


def test_http_reward_gives_up_with_a_clear_error():
    slow = Endpoint(delay=1.0)
    try:
        rm = HttpRewardModel(HttpRewardConfig(url=slow.url, retries=1, timeout_s=0.2), backoff_s=0.01)
        with pytest.raises(RewardEndpointError, match="failed 2 times"):
            rm.score(["p"], ["a"])
    finally:
        slow.close()
    bad = Endpoint(failures=5, status=400)
    try:
        with pytest.raises(RewardEndpointError, match="HTTP 400"):
            HttpRewardModel(HttpRewardConfig(url=bad.url, retries=3), backoff_s=0.01).score(["p"], ["a"])
        assert bad.requests == 1  # a client error is not retried
    finally:
        bad.close()


@pytest.fixture
def reward_model_dir(tmp_path):
    """A one-layer Llama reward model (scalar head, pad id 0), seeded, saved as an HF directory."""
    from transformers import LlamaConfig, LlamaForSequenceClassification
    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, pad_token_id=0, num_labels=1)
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(str(tmp_path))
    return tmp_path


def test_reward_model_worker_batches_like_single_rows(reward_model_dir):
    worker = RewardModelWorker(str(reward_model_dir), batch_size=3)
    prompts = [[5, 6], [7], [8, 9, 10], [11], [12, 13]]
    responses = [[20], [21, 22, 23], [24], [25, 26], [27]]
    batched = worker.score(prompts, responses)
    single = [worker.score([p], [r])[0] for p, r in zip(prompts, responses)]
    assert batched == pytest.approx(single, abs=1e-5)  # right padding never changes a row's score
    assert len(set(np.round(batched, 4))) == 5


def test_critic_from_a_reward_model_reads_its_score_at_every_prefix(reward_model_dir):
    """ppo.critic_init=reward_model: V(prefix up to t) is the reward model's score of that prefix."""
    from modeling.model import load_value_model
    worker = RewardModelWorker(str(reward_model_dir), batch_size=4)
    critic = load_value_model(reward_model_dir).eval()
    tokens = [5, 6, 7, 21, 22, 23]
    with torch.no_grad():
        values = critic(torch.tensor([tokens])).logits[0, :, 0]                     # [T]
    prefixes = worker.score([tokens[:1]] * 5, [tokens[1:t + 1] for t in range(1, 6)])
    assert values[1:].tolist() == pytest.approx(prefixes, abs=1e-5)
    assert len(set(np.round(prefixes, 4))) == 5


def test_the_scalar_head_scores_in_fp32_under_bf16_autocast(reward_model_dir):
    """Two answers that differ in one token: under bf16 autocast the backbone runs in bf16, but the head reads
    its output in fp32, so the scores keep fp32's resolution (a bf16 head rounds them to 8 significant bits,
    where Bradley-Terry pairs that differ in one number tied)."""
    from modeling.model import load_reward_model
    model = load_reward_model(reward_model_dir).eval()
    rows = torch.tensor([[5, 6, 7, 21], [5, 6, 7, 22]])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = model.model(input_ids=rows).last_hidden_state[:, -1]              # [2, H]
        scores = model(input_ids=rows).logits[:, 0]                                # [2]
        bf16_head = torch.nn.functional.linear(hidden, model.score.weight)[:, 0]   # what a plain Linear gives
    exact = hidden.float() @ model.score.weight[0]                                 # [2], fp32
    assert scores.dtype == torch.float32 and bf16_head.dtype == torch.bfloat16
    assert scores.tolist() == pytest.approx(exact.tolist(), rel=1e-6, abs=1e-7)
    assert (scores - exact).abs().max() < (bf16_head.float() - exact).abs().max() / 10
    assert [n for n, _ in model.named_parameters() if n.startswith("score")] == ["score.weight"]  # names unchanged
