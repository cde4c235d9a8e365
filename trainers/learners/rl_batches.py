"""Typed records the alignment loops send to the policy, critic and reference (driver -> learner), and
the builder that turns Rollouts (token ids) into them.

Layout of every row: tokens = prompt + response, right-padded; position t predicts tokens[t+1], so the
response's log-probs sit at positions P-1 .. P+R-2 and loss_mask is 1 exactly there."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from data.shards import pad_rows
from trainers.align_config import LossAggregation


@dataclass
class PolicyLoss:
    """The clipped policy-gradient objective (PPO's, and GRPO's) the learners minimise."""
    clip_low: float
    clip_high: float
    dual_clip: Optional[float]
    kl_coef: float                 # beta of beta * k3(pi, pi_ref) in the loss; 0 = no KL term (KL is still measured)
    aggregation: LossAggregation
    tis_cap: Optional[float] = None  # C of min(pi_old / pi_behaviour, C) on rows with behaviour log-probs


@dataclass
class PolicyBatch:
    """One optimizer step's rows on one rank.

    tokens [B, T+1] int64; loss_mask [B, T] float32 (1 on response targets); advantages [B, T] float32;
    old_logprobs [B, T] or None (None: on-policy, the current policy's own log-probs, detached);
    ref_logprobs [B, T] or None (needed when kl_coef > 0; when given, KL to pi_ref is measured);
    behaviour_logprobs [B, T] or None: the rollout workers' log-probs of off-policy rows (TIS weights them).
    Rows are right-padded; each micro-batch is cut to its own longest row before the forward pass.
    global_tokens / global_sequences: counted targets / non-empty rows in the step over all ranks, so the
    loss is a mean over the global batch whatever the split into ranks and micro-batches."""
    tokens: np.ndarray
    loss_mask: np.ndarray
    advantages: np.ndarray
    old_logprobs: Optional[np.ndarray]
    ref_logprobs: Optional[np.ndarray]
    global_tokens: int
    global_sequences: int
    behaviour_logprobs: Optional[np.ndarray] = None

    def split(self, parts: int) -> list["PolicyBatch"]:
        return _split(self, parts, ("tokens", "loss_mask", "advantages", "old_logprobs", "ref_logprobs",
                                    "behaviour_logprobs"))


@dataclass
class ValueBatch:
    """Critic rows: tokens [B, T+1], loss_mask [B, T], old_values [B, T] (at rollout time), returns [B, T]."""
    tokens: np.ndarray
    loss_mask: np.ndarray
    old_values: np.ndarray
    returns: np.ndarray
    global_tokens: int

    def split(self, parts: int) -> list["ValueBatch"]:
        return _split(self, parts, ("tokens", "loss_mask", "old_values", "returns"))


@dataclass
class DpoBatch:
    """Preference pairs: chosen/rejected [B, T+1] int64 (prompt + answer), their response masks [B, T],
    and the reference policy's summed response log-probs ref_chosen/ref_rejected [B] (computed once)."""
    chosen: np.ndarray
    chosen_mask: np.ndarray
    rejected: np.ndarray
    rejected_mask: np.ndarray
    ref_chosen: np.ndarray
    ref_rejected: np.ndarray
    global_pairs: int

    def split(self, parts: int) -> list["DpoBatch"]:
        return _split(self, parts, ("chosen", "chosen_mask", "rejected", "rejected_mask", "ref_chosen", "ref_rejected"))


def _split(batch, parts: int, arrays: tuple[str, ...]) -> list:
    rows = len(getattr(batch, arrays[0]))
    if rows % parts:
        raise ValueError(f"batch of {rows} rows does not split into {parts} equal parts")
    pieces = {name: (np.split(getattr(batch, name), parts) if getattr(batch, name) is not None else [None] * parts)
              for name in arrays}
    return [replace(batch, **{name: pieces[name][i] for name in arrays}) for i in range(parts)]


@dataclass
class PolicyStepResult:
    """One rank's sums over its rows of an optimizer step (the driver adds ranks and divides)."""
    loss_sum: float        # the aggregated loss, times its share of the global batch
    tokens: int            # counted response tokens
    entropy_sum: float     # sum over tokens of H(pi_theta(. | prefix))
    clipped_sum: float     # tokens whose gradient the clip (or dual clip) removed
    approx_kl_sum: float   # sum of k3(pi_old || pi_theta): how far this update moved the policy
    ref_kl_sum: float      # sum of k3(pi_theta || pi_ref) (0 without a reference)
    grad_norm: float
    lr: float
    tis_ratio_sum: float = 0.0      # sum of pi_old / pi_behaviour over off-policy tokens (TIS)
    tis_truncated_sum: float = 0.0  # off-policy tokens whose ratio the TIS cap truncated
    tis_tokens: int = 0             # off-policy tokens
    padded_cells: int = 0           # micro-batch cells (rows x width) the forward passes computed


@dataclass
class ValueStepResult:
    loss_sum: float        # sum over tokens of the (clipped) value loss
    tokens: int
    grad_norm: float


@dataclass
class DpoStepResult:
    loss_sum: float        # sum over pairs of the DPO loss
    pairs: int
    correct: int           # pairs whose implicit reward margin is > 0
    margin_sum: float      # sum of beta * (log-ratio chosen - log-ratio rejected)
    grad_norm: float
    lr: float


def token_rows(prompts: list[list[int]], responses: list[list[int]], pad_id: int, rows: int | None = None,
               width: int | None = None,
               response_masks: list[list[int]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """prompt + response per row -> tokens [rows, width] right-padded and loss_mask [rows, width - 1] (1 where
    the target is a response token the model sampled: response_masks[i][j] says which, for multi-turn episodes
    whose observations stay out of the loss; None: all). rows > len(prompts) appends all-pad rows with an empty
    mask (filler, so that every rank gets micro_batch x grad_accum rows; they add nothing to any sum). width
    defaults to the longest row."""
    rows = len(prompts) if rows is None else rows
    width = max(len(p) + len(r) for p, r in zip(prompts, responses)) if width is None else width
    tokens = pad_rows([p + r for p, r in zip(prompts, responses)] + [[pad_id]] * (rows - len(prompts)), pad_id, width)
    mask = np.zeros((rows, width - 1), np.float32)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        mask[i, len(p) - 1:len(p) + len(r) - 1] = 1.0 if response_masks is None else response_masks[i]
    return tokens, mask


def row_ends(loss_mask: np.ndarray) -> np.ndarray:
    """loss_mask [B, T] -> [B]: each row's columns up to its last counted target (0 for a row without one)."""
    return np.where(loss_mask.any(1), loss_mask.shape[1] - np.argmax(loss_mask[:, ::-1] > 0, axis=1), 0)


def used_width(loss_mask: np.ndarray) -> int:
    """Columns of loss_mask [B, T] up to its last counted target (rows are right-padded): a forward pass over
    tokens[:, :w + 1] yields every log-prob a loss reads; 1 for an all-zero mask."""
    return max(1, int(row_ends(loss_mask).max(initial=0)))


def length_order(loss_mask: np.ndarray, parts: int) -> np.ndarray:
    """Row order for `parts` ranks (contiguous equal parts): rows sorted longest first and dealt round-robin, so
    each rank gets a like share of tokens and its consecutive micro-batches hold rows of like length."""
    order = np.argsort(-row_ends(loss_mask), kind="stable")
    return order.reshape(-1, parts).T.reshape(-1)


def per_token(values: list[np.ndarray] | np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-row values laid onto the response positions of `mask` [B, T]: a scalar per row is broadcast to
    its response tokens; an array per row (one value per response token) is placed in order."""
    out = np.zeros_like(mask)
    for i, v in enumerate(values):
        where = np.flatnonzero(mask[i])
        out[i, where] = v if np.ndim(v) == 0 else np.asarray(v, np.float32)[:len(where)]
    return out
