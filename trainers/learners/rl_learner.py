"""Learners for the alignment loops: the policy (clipped policy gradient, DPO) and the PPO critic.

Both are Learner ranks (DeepSpeed ZeRO 0-3, one Ray actor each); every train_* call is collective and
takes this rank's micro_batch x grad_accum rows. Each micro-batch's loss is scaled by
grad_accum x world / (global count), because DeepSpeed divides by grad_accum and averages over ranks:
the step then minimises a mean over the global batch, however it is split."""
from __future__ import annotations

import numpy as np
import torch

from trainers.align_config import LossAggregation
from trainers.learners.learner import Learner
from trainers.learners.rl_batches import (
    DpoBatch,
    DpoStepResult,
    PolicyBatch,
    PolicyLoss,
    PolicyStepResult,
    ValueBatch,
    ValueStepResult,
    used_width,
)
from trainers.losses.rl import (
    dpo_loss,
    entropy_from_logits,
    kl_k3,
    policy_loss,
    sequence_mean,
    token_mean,
    truncated_importance_weights,
    value_loss,
)


class PolicyLearner(Learner):
    def _token_logprobs(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log pi_theta of each target token [B, T] (fp32, with grad) and the entropy at each position [B, T]."""
        logp, logits = self._target_logprobs(tokens)
        with torch.no_grad():
            entropy = entropy_from_logits(logits)                                       # [B, T]
        return logp, entropy

    def train_policy(self, batch: PolicyBatch, spec: PolicyLoss) -> PolicyStepResult:
        """Collective: one optimizer step of the clipped surrogate (+ beta k3 to pi_ref) over this rank's rows;
        rows with behaviour log-probs are weighted by TIS. Each micro-batch is cut to its longest row."""
        self.engine.train()
        micro = self._micro_batch(len(batch.tokens), "rows")
        scale = self.cfg.grad_accum * self.world_size
        lr = self.engine.get_lr()[0]
        # loss, tokens, entropy, clipped, approx_kl, ref_kl; TIS ratio, truncated, tokens; micro-batch cells
        sums = np.zeros(10)

        for i in range(self.cfg.grad_accum):
            rows = slice(i * micro, (i + 1) * micro)
            width = used_width(batch.loss_mask[rows])       # right padding past every row's end changes no log-prob

            def cut(array):
                return torch.tensor(array[rows, :width], device=self.device) if array is not None else None

            mask, adv, old, ref, behaviour = (cut(a) for a in (batch.loss_mask, batch.advantages, batch.old_logprobs,
                                                                batch.ref_logprobs, batch.behaviour_logprobs))
            tokens = torch.tensor(batch.tokens[rows, :width + 1], device=self.device)
            logp, entropy = self._token_logprobs(tokens)                                # [m, w]
            old = logp.detach() if old is None else old                                 # on-policy: ratio 1
            losses, clipped = policy_loss(logp, old, adv, spec.clip_low, spec.clip_high, spec.dual_clip)  # [m, w]
            tis = [0.0, 0.0, 0.0]
            if behaviour is not None and spec.tis_cap is not None:
                weights, ratios = truncated_importance_weights(old, behaviour, spec.tis_cap)   # [m, w]
                losses = losses * weights
                tis = [(ratios * mask).sum().item(), ((ratios > spec.tis_cap) * mask).sum().item(), mask.sum().item()]
            ref_kl = kl_k3(logp, ref) if ref is not None else torch.zeros_like(logp)   # [m, w], eq. k3
            if spec.kl_coef > 0:
                if ref is None:
                    raise ValueError("kl_coef > 0 needs the reference policy's log-probs in the batch")
                losses = losses + spec.kl_coef * ref_kl
            # a local mean, reweighted by this micro-batch's share of the global batch's tokens (or responses)
            if spec.aggregation == LossAggregation.token_mean:
                loss = token_mean(losses, mask) * (mask.sum() * scale / batch.global_tokens)
            else:
                loss = sequence_mean(losses, mask) * ((mask.sum(1) > 0).sum() * scale / batch.global_sequences)
            self.engine.backward(loss + self._omega())
            grad_norm = self._optimizer_step(last=i == self.cfg.grad_accum - 1)
            with torch.no_grad():
                sums += [loss.item() / scale, mask.sum().item(), (entropy * mask).sum().item(),
                         (clipped * mask).sum().item(), (kl_k3(old, logp.detach()) * mask).sum().item(),
                         (ref_kl.detach() * mask).sum().item(), *tis, micro * width]
        return PolicyStepResult(sums[0], int(sums[1]), *sums[2:6], grad_norm=grad_norm, lr=lr, tis_ratio_sum=sums[6],
                                tis_truncated_sum=sums[7], tis_tokens=int(sums[8]), padded_cells=int(sums[9]))

    def _summed_logprobs(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logp, _ = self._token_logprobs(tokens)
        return (logp * mask).sum(1)                                                     # [B]

    def train_dpo(self, batch: DpoBatch, beta: float) -> DpoStepResult:
        """Collective: one optimizer step of the DPO loss over this rank's pairs."""
        self.engine.train()
        micro = self._micro_batch(len(batch.chosen), "pairs")
        scale = self.cfg.grad_accum * self.world_size / batch.global_pairs
        lr = self.engine.get_lr()[0]
        loss_total, correct, margin_total = 0.0, 0, 0.0
        for i in range(self.cfg.grad_accum):
            rows = slice(i * micro, (i + 1) * micro)
            both = torch.tensor(np.concatenate([batch.chosen[rows], batch.rejected[rows]]), device=self.device)
            mask = torch.tensor(np.concatenate([batch.chosen_mask[rows], batch.rejected_mask[rows]]), device=self.device)
            logps = self._summed_logprobs(both, mask)                                   # [2 micro]
            losses, chosen_r, rejected_r = dpo_loss(logps[:micro], logps[micro:],
                                                    torch.tensor(batch.ref_chosen[rows], device=self.device),
                                                    torch.tensor(batch.ref_rejected[rows], device=self.device), beta)
            self.engine.backward(losses.sum() * scale + self._omega())
            grad_norm = self._optimizer_step(last=i == self.cfg.grad_accum - 1)
            margin = (chosen_r - rejected_r).detach()
            loss_total += losses.sum().item()
            correct += int((margin > 0).sum())
            margin_total += margin.sum().item()
        return DpoStepResult(loss_total, len(batch.chosen), correct, margin_total, grad_norm, lr)


class CriticLearner(Learner):
    """V_psi(s_t) at every position (the learner group started with head=ModelHead.value)."""

    def _values(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._logits(tokens[:, :-1])[..., 0].float()                            # [B, T]

    @torch.no_grad()
    def values(self, tokens: np.ndarray) -> np.ndarray:
        """Collective under ZeRO-3: V(prefix up to t) for each position t of tokens [B, T+1] -> [B, T]."""
        self.engine.eval()
        return self._values(torch.tensor(tokens, device=self.device)).cpu().numpy()

    def train_values(self, batch: ValueBatch, clip: float | None) -> ValueStepResult:
        """Collective: one optimizer step of the (clipped) value loss, a token mean over the global batch."""
        self.engine.train()
        micro = self._micro_batch(len(batch.tokens), "rows")
        scale = self.cfg.grad_accum * self.world_size / batch.global_tokens
        loss_total, tokens_total = 0.0, 0
        for i in range(self.cfg.grad_accum):
            rows = slice(i * micro, (i + 1) * micro)
            tokens, mask, old, returns = (torch.tensor(a[rows], device=self.device) for a in
                                          (batch.tokens, batch.loss_mask, batch.old_values, batch.returns))
            losses = value_loss(self._values(tokens), old, returns, clip)               # [m, T]
            self.engine.backward((losses * mask).sum() * scale)
            grad_norm = self._optimizer_step(last=i == self.cfg.grad_accum - 1)
            loss_total += (losses.detach() * mask).sum().item()
            tokens_total += int(mask.sum().item())
        return ValueStepResult(loss_total, tokens_total, grad_norm)
