"""Serving a reward model R_phi: `RewardModelWorker` holds a trained model (run as a Ray actor by
cluster.scorers), `HttpRewardModel` calls one served elsewhere. Both score (prompt, response)
pairs in batches; the worker takes token ids (the policy's tokenizer), the endpoint takes text."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import numpy as np
import torch

from data.shards import pad_rows
from modeling.config import Precision
from rewards.config import HttpRewardConfig


class RewardModelWorker:
    def __init__(self, model_dir: str, batch_size: int, precision: Precision = Precision.fp32, gpus: float = 0.0,
                 threads: int = 1):
        """precision: the learners' (the reward model trained under it); gpus: the share of a GPU Ray reserved
        for this worker (> 0: it computes there)."""
        from modeling.model import computes_in_bf16, load_reward_model, role_device
        torch.set_num_threads(threads)
        self.device = role_device(gpus, "reward-model worker")
        self.model = load_reward_model(model_dir).eval().to(self.device)
        self.pad_id = self.model.config.pad_token_id
        self.batch_size, self.bf16 = batch_size, computes_in_bf16(precision, self.device)

    def device_type(self) -> str:
        return self.device.type

    @torch.no_grad()
    def score(self, prompts: list[list[int]], responses: list[list[int]]) -> list[float]:
        """R_phi(x, y) for each (prompt ids, response ids), read at the sequence's last token."""
        if len(prompts) != len(responses):
            raise ValueError(f"score: {len(prompts)} prompts for {len(responses)} responses")
        rows = [p + r for p, r in zip(prompts, responses)]
        if any(not row for row in rows):
            raise ValueError("score: an empty (prompt, response) pair")
        order = np.argsort([len(r) for r in rows])  # batches of similar lengths pad less
        scores = np.zeros(len(rows), np.float32)
        for start in range(0, len(rows), self.batch_size):
            chunk = order[start:start + self.batch_size]
            batch = [rows[i] for i in chunk]
            tokens = torch.from_numpy(pad_rows(batch, self.pad_id, max(len(r) for r in batch))).to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                scores[chunk] = self.model(input_ids=tokens).logits[:, 0].float().cpu().numpy()
        return scores.tolist()


class RewardEndpointError(RuntimeError):
    """The HTTP reward endpoint failed on every attempt, or answered with something unusable."""


class HttpRewardModel:
    """POSTs {"prompts": [...], "responses": [...]} and reads {"scores": [...]}; every request has a
    timeout, and connection errors, timeouts and HTTP 5xx are retried with doubling back-off."""

    def __init__(self, cfg: HttpRewardConfig, backoff_s: float = 0.5):
        self.cfg, self.backoff_s = cfg, backoff_s

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        if len(prompts) != len(responses):
            raise ValueError(f"score: {len(prompts)} prompts for {len(responses)} responses")
        out: list[float] = []
        for start in range(0, len(prompts), self.cfg.batch_size):
            batch = slice(start, start + self.cfg.batch_size)
            out += self._post(prompts[batch], responses[batch])
        return out

    def _post(self, prompts: list[str], responses: list[str]) -> list[float]:
        body = json.dumps({"prompts": prompts, "responses": responses}).encode()
        errors = []
        for attempt in range(self.cfg.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            request = urllib.request.Request(self.cfg.url, body, {"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=self.cfg.timeout_s) as reply:
                    payload = json.loads(reply.read())
            except urllib.error.HTTPError as e:
                if e.code < 500:  # the request itself is wrong: retrying cannot help
                    raise RewardEndpointError(f"{self.cfg.url}: HTTP {e.code} {e.reason}") from None
                errors.append(f"HTTP {e.code}")
                continue
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                errors.append(type(getattr(e, "reason", e)).__name__)
                continue
            scores = payload.get("scores") if isinstance(payload, dict) else None
            if not isinstance(scores, list) or len(scores) != len(prompts):
                raise RewardEndpointError(f"{self.cfg.url}: expected {{\"scores\": [{len(prompts)} numbers]}}, "
                                          f"got {str(payload)[:200]}")
            return [float(s) for s in scores]
        raise RewardEndpointError(f"{self.cfg.url}: failed {len(errors)} times ({', '.join(errors)}) "
                                  f"with timeout {self.cfg.timeout_s:.0f}s")
