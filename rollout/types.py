"""Records that cross the rollout boundary: sampling settings in, Rollouts out (token ids, never text)."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Optional


@dataclass
class Sampling:
    temperature: float = 1.0
    """tau in eq. (1); <= 0 means greedy (argmax), the tau -> 0 limit."""
    top_k: int = 0
    """Keep only the k most likely tokens (0 = all)."""
    top_p: float = 1.0
    """Keep the smallest set of tokens whose probability reaches top_p, in (0, 1]."""
    n: int = 1
    """Samples per prompt."""
    max_new_tokens: int = 64
    """Stop after this many generated tokens."""
    min_new_tokens: int = 0
    """Do not stop (on EOS or a stop string) before this many tokens; = max_new_tokens fixes the length."""
    stop: list[str] = field(default_factory=list)
    """Stop once the response text ends with one of these (the tokens that spelled it stay in the response)."""
    seed: Optional[int] = None
    """Seeds the sampler for this call (None: the engine continues its own stream); each worker adds its index."""

    def __post_init__(self):
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p={self.top_p}: must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k}: must be >= 0 (0 = no top-k)")
        if self.n < 1:
            raise ValueError(f"n={self.n}: must be >= 1")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens}: must be >= 1")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(f"min_new_tokens={self.min_new_tokens}: must be in [0, max_new_tokens]")


class FinishReason(Enum):
    eos = "eos"
    length = "length"
    stop = "stop"


@dataclass
class Rollout:
    """One sampled response y to a prompt x; for a multi-turn episode, y is everything after the prompt: the
    model's turns as sampled and the environment's observations between them."""
    prompt_ids: list[int]        # x, [P]
    response_ids: list[int]      # y, [R]
    logprobs: list[float]        # [R] log pi_theta(y_t | x, y_<t) of the untempered model (what the learner
                                 # computes); 0.0 on observation tokens
    finish_reason: FinishReason
    policy_version: int          # the weights it was sampled under (0 = the stage's initial weights)
    provenance: tuple[str, ...] = ()   # ids of the retrieved chunks in the prompt (RAG), set by the driver
    response_mask: Optional[list[int]] = None   # [R] 1: sampled by the model (in the loss), 0: an observation;
                                                # None: every token sampled (a single turn)
    turns: int = 1               # model turns
    env_parts: dict[str, float] = field(default_factory=dict)   # the environment's reward parts, summed

    def sampled_mask(self) -> list[int]:
        """[R]: 1 on the tokens the model sampled."""
        return [1] * len(self.response_ids) if self.response_mask is None else self.response_mask

    def final_turn(self) -> list[int]:
        """The model's last turn: the ids after the last observation (all of y for a single turn). Verifiers
        score this, so that no tool's output can stand in for the model's answer."""
        mask = self.sampled_mask()
        last = max((j for j, m in enumerate(mask) if not m), default=-1)
        return self.response_ids[last + 1:]
