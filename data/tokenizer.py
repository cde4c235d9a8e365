"""Byte-level BPE tokenizer trained with `tokenizers`, saved as an HF tokenizer that transformers
and vLLM both load. Every encoded text starts with <|bos|>; chat turns use the role markers below."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
SPECIAL_TOKENS = [BOS, EOS, PAD, SYSTEM, USER, ASSISTANT, END]

# Renders [{"role": "user", "content": ...}, ...] with the same markers the corpus uses; the
# assistant turn ends with <|eos|> so that generation stops on one token.
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}<|assistant|>{{ m['content'] }}<|eos|>"
    "{% else %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: Path, max_len: int) -> PreTrainedTokenizerFast:
    """Learn BPE merges on `texts` and save an HF tokenizer to `out_dir`."""
    min_vocab = 256 + len(SPECIAL_TOKENS) + 1
    if vocab_size < min_vocab:
        raise ValueError(f"vocab_size={vocab_size} is below {min_vocab} (256 bytes + specials + 1 merge)")
    tok = Tokenizer(models.BPE())
    # Digits one at a time: numbers then tokenise the same way wherever they appear (arithmetic).
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A $B",
                                                       special_tokens=[(BOS, bos_id)])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                 additional_special_tokens=[SYSTEM, USER, ASSISTANT, END],
                                 model_max_length=max_len, clean_up_tokenization_spaces=False)
    hf.chat_template = CHAT_TEMPLATE
    out_dir.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(str(out_dir))
    return hf


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    return AutoTokenizer.from_pretrained(str(path))


def token_byte_lengths(tok: PreTrainedTokenizerFast) -> np.ndarray:
    """UTF-8 bytes each token id stands for ([V] int32; 0 for special tokens), for bits per byte.

    In a byte-level BPE vocabulary every character of a token string stands for exactly one byte."""
    lengths = np.zeros(len(tok), dtype=np.int32)
    special = set(tok.all_special_ids)
    for token, i in tok.get_vocab().items():
        lengths[i] = 0 if i in special else len(token)
    return lengths


def format_prompt(question: str) -> str:
    """The prompt every stage uses for a question: a user turn, then the assistant marker."""
    return f"{USER}{question.strip()}{END}{ASSISTANT}"
