"""Tool-use demonstrations for SFT: the episode a policy that uses its tool well would have, built by stepping
the real environment, so the ids and their boundaries are the ones an episode has:

    prompt | <tool>calculator: 9684 + 1475 - 8628</tool> | <result>2531</result> | \\n#### 2531 EOS
             the model's call (learned)                     the tool's result        the final turn (learned)
                                                            (masked: the environment's, never the model's)

The call's args come from the question (Demonstration.args); the final turn states the reference answer
(Demonstration.answer). A demonstration whose tool fails, or whose result does not hold the reference answer,
is refused (NoDemonstration): SFT on it would teach the model to answer past its tool."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from data.tasks import Task
from tools.config import CallArgs, Demonstration, EpisodeConfig
from tools.environment import CALL_CLOSE, CALL_OPEN, RESULT_CLOSE, RESULT_OPEN, Environment

ARITHMETIC = re.compile(r"[\d(][\d\s+\-*/().]*[\d)]")
OPERATOR = re.compile(r"\d\s*[-+*/]\s*[\d(]|\)\s*[-+*/]")


class NoDemonstration(ValueError):
    """The tool's answer to this task's call does not hold the reference answer (or the call failed)."""


@dataclass
class DemoTarget:
    ids: list[int]       # [A] the model's call, the tool's result, the final turn, EOS
    mask: list[int]      # [A] 1: the model's tokens (in the loss); 0: the result's


def demonstration_fits(key: str, demo: Demonstration, episode: Optional[EpisodeConfig]) -> tuple[bool, str]:
    """(whether the demonstration's tool is one the stage's episode offers, the config error if not)."""
    offered = [t.label for t in episode.tools] if episode is not None else []
    return demo.tool in offered, (f"{key}.demonstrate.tool={demo.tool}: must be one of {key}.episode's tools "
                                  f"({', '.join(offered) or f'none: set {key}.episode'})")


def call_args(question: str, kind: CallArgs) -> str:
    if kind == CallArgs.question:
        return question.strip()
    runs = [m.group(0).strip() for m in ARITHMETIC.finditer(question) if OPERATOR.search(m.group(0))]
    if not runs:
        raise ValueError(f"demonstration: no arithmetic expression in the question {question[:80]!r}")
    return max(runs, key=len)


def demonstration(env: Environment, task: Task, demo: Demonstration, tokenizer) -> DemoTarget:
    """One episode through `env`: a call turn, the environment's observation, then `#### answer` and EOS."""
    env.reset(task)
    call = tokenizer(f"{CALL_OPEN}{demo.tool}: {call_args(task.sample.prompt, demo.args)}{CALL_CLOSE}",
                     add_special_tokens=False)["input_ids"]
    step = env.step(call)
    result = tokenizer.decode(step.observation, skip_special_tokens=False)
    inner = result.removeprefix(RESULT_OPEN).removesuffix(RESULT_CLOSE)
    if step.done or step.reward_parts.get("tool_errors") or task.sample.answer not in inner:
        raise NoDemonstration(f"demonstration for {task.sample.prompt[:80]!r}: the {demo.tool} call answered "
                              f"{result[:120]!r}, which does not hold the answer {task.sample.answer!r}")
    text = "\n" + demo.answer.format(answer=task.sample.answer, solution=task.solution)
    final = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if not env.step(final).done:
        raise ValueError("demonstration: the environment did not end the episode at the final answer")
    return DemoTarget(call + step.observation + final, [1] * len(call) + [0] * len(step.observation) + [1] * len(final))
