"""The frozen reference policy pi_ref: forward passes only, never updated. Run as a Ray actor by
cluster.scorers.ReferenceActor; grpo and ppo measure KL(pi_theta || pi_ref) against its log-probs."""
from __future__ import annotations

import numpy as np
import torch

from modeling.config import Precision
from trainers.losses.lm import token_logprobs


class ReferencePolicy:
    def __init__(self, model_dir: str, batch_size: int, precision: Precision, gpus: float = 0.0, threads: int = 1):
        """precision: the learners' (auto resolves on this actor's device as on a learner rank's); gpus: the
        share of a GPU Ray reserved for it (> 0: it computes there)."""
        from modeling.attention import attention_for
        from modeling.model import computes_in_bf16, load_causal_lm, role_device
        torch.set_num_threads(threads)
        self.device = role_device(gpus, "reference policy")
        # fp32 weights and the attention of the learners', so that KL is exactly 0 before the first update
        self.model = attention_for(load_causal_lm(model_dir).eval().to(self.device), self.device)
        self.batch_size, self.bf16 = batch_size, computes_in_bf16(precision, self.device)

    def device_type(self) -> str:
        return self.device.type

    @torch.no_grad()
    def logprobs(self, tokens: np.ndarray, ends: np.ndarray | None = None) -> np.ndarray:
        """log pi_ref(x_{t+1} | x_<=t) for tokens [B, T+1] -> [B, T] fp32, computed as the learners compute
        pi_theta (the same autocast), so that KL is exactly 0 before the first update. ends [B]: the columns
        each row needs (row_ends of its loss mask; rows are right-padded); rows then go longest first in batches
        cut to their longest row, and the columns past a row's end are 0. None: every column of every row."""
        out = np.zeros((len(tokens), tokens.shape[1] - 1), np.float32)
        ends = np.full(len(tokens), tokens.shape[1] - 1) if ends is None else np.asarray(ends)
        order = np.argsort(-ends, kind="stable")
        for start in range(0, len(tokens), self.batch_size):
            batch = order[start:start + self.batch_size]
            width = max(1, int(ends[batch].max()))
            rows = torch.from_numpy(tokens[batch, :width + 1]).to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                logits = self.model(input_ids=rows[:, :-1]).logits                       # [b, w, V]
            out[batch, :width] = token_logprobs(logits, rows[:, 1:]).cpu().numpy()
        return out
