import math

import numpy as np
import pytest

from data.config import SourceConfig, SourceKind
from data.corpus import _running_sums, format_answer, iter_documents, problems
from data.shards import PackedWindows, pack_corpus, read_meta, read_token_bytes, train_batch_indices
from data.tokenizer import (
    ASSISTANT,
    BOS,
    EOS,
    SPECIAL_TOKENS,
    USER,
    format_prompt,
    load_tokenizer,
    token_byte_lengths,
    train_tokenizer,
)

TEXTS = ["To be, or not to be, that is the question.", "Whether 'tis nobler in the mind to suffer",
         format_prompt("What is 12 + 7?") + format_answer("12 + 7 = 19", "19")] * 20


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    train_tokenizer(TEXTS, 300, out, 128)
    return load_tokenizer(out)


def test_tokenizer_specials_roundtrip(tokenizer):
    assert len(tokenizer) == 300
    for tok in SPECIAL_TOKENS:
        assert tokenizer.convert_tokens_to_ids(tok) != tokenizer.unk_token_id
    ids = tokenizer(TEXTS[2])["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.convert_tokens_to_ids(USER) in ids and tokenizer.convert_tokens_to_ids(ASSISTANT) in ids
    assert tokenizer.decode(ids) == BOS + TEXTS[2]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "What is 12 + 7?12 + 7 = 19\n#### 19"
    # digits are split one by one
    assert "12" not in tokenizer.convert_ids_to_tokens(tokenizer("12 + 7")["input_ids"])


def test_tokenizer_rejects_tiny_vocab(tmp_path):
    with pytest.raises(ValueError, match="below 264"):
        train_tokenizer(TEXTS, 200, tmp_path, 64)


def test_token_bytes_sum_to_text_bytes(tokenizer):
    text = "Whether 'tis nobler — in the mind"
    ids = tokenizer(text)["input_ids"]
    assert token_byte_lengths(tokenizer)[ids].sum() == len(text.encode("utf-8"))


def test_chat_template_matches_corpus_prompt(tokenizer):
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "What is 12 + 7?"}],
                                             add_generation_prompt=True, tokenize=False)
    assert rendered == format_prompt("What is 12 + 7?")


def test_running_sums():
    assert _running_sums("98 + 93 - 77") == "98 + 93 = 191\n191 - 77 = 114"
    assert _running_sums("(1 + 2) * 3") == ""


def test_problems_are_seeded():
    a = problems("chain_sum", 5, 3, {"max_digits": 2})
    assert a == problems("chain_sum", 5, 3, {"max_digits": 2})
    assert a != problems("chain_sum", 5, 4, {"max_digits": 2})
    doc = next(iter_documents(SourceConfig(SourceKind.reasoning_gym, "chain_sum", 1, options={"max_digits": 2}), 3))
    assert doc.startswith(USER) and doc.endswith(f"#### {a[0].answer}{EOS}")


def test_shakespeare_source():
    doc = next(iter_documents(SourceConfig(SourceKind.shakespeare), 0))
    assert "**" not in doc and len(doc) > 200


def test_file_sources(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n')
    assert list(iter_documents(SourceConfig(SourceKind.file, str(tmp_path / "a.jsonl")), 0)) == ["one", "two"]
    with pytest.raises(KeyError, match="no field 'body'"):
        list(iter_documents(SourceConfig(SourceKind.file, str(tmp_path / "a.jsonl"), text_field="body"), 0))
    with pytest.raises(FileNotFoundError):
        list(iter_documents(SourceConfig(SourceKind.file, str(tmp_path / "missing.txt")), 0))


def test_pack_and_windows(tokenizer, tmp_path):
    docs = [f"document number {i} " * (1 + i % 5) for i in range(200)]
    meta = pack_corpus(tokenizer, docs, tmp_path / "data", 0.1, seed=0, shard_tokens=500)
    assert meta.train_tokens + meta.val_tokens == sum(len(tokenizer(d)["input_ids"]) + 1 for d in docs)
    assert meta.train_documents + meta.val_documents == 200 and 5 <= meta.val_documents <= 40
    assert len(meta.train_shards) == math.ceil(meta.train_tokens / 500)
    assert not (tmp_path / "data.tmp").exists()
    assert read_token_bytes(tmp_path / "data").shape == (len(tokenizer),)
    train = PackedWindows(tmp_path / "data", "train", 16)
    stream = np.concatenate([np.fromfile(tmp_path / "data" / n, dtype=meta.dtype) for n in meta.train_shards])
    first = train.window(0)
    assert first.shape == (17,) and (first == stream[:17]).all()
    assert (train.window(1)[0] == stream[16])  # windows overlap by one token (target of the last input)


def test_empty_corpus_fails_cleanly(tokenizer, tmp_path):
    with pytest.raises(ValueError, match="empty"):
        pack_corpus(tokenizer, ["", "  "], tmp_path / "data", 0.1, 0, 100)
    assert not (tmp_path / "data").exists() and not (tmp_path / "data.tmp").exists()
    with pytest.raises(FileNotFoundError, match="tokenizer stage"):
        read_meta(tmp_path / "data")


def test_batch_order_is_a_function_of_step():
    n, b = 50, 8
    epoch = np.concatenate([train_batch_indices(n, b, s, seed=1) for s in range(7)])  # 56 > 50: crosses an epoch
    assert sorted(epoch[:n]) == list(range(n))  # every window once per epoch
    assert (train_batch_indices(n, b, 3, seed=1) == epoch[24:32]).all()
    assert not (train_batch_indices(n, b, 3, seed=2) == epoch[24:32]).all()


def test_pair_texts_render_with_the_policy_chat_template(tokenizer):
    from data.config import Corruption
    from data.pairs import PreferencePair, generated_pairs, pair_texts
    pair = generated_pairs("chain_sum", 1, 0, {"max_digits": 1}, [Corruption.final])[0]
    # tether's own template and eos give back exactly the stored text
    assert pair_texts(pair, tokenizer) == (pair.prompt, pair.chosen, pair.rejected)
    # another model's template renders the question its way, and its eos ends the answers
    import copy
    other = copy.deepcopy(tokenizer)
    other.chat_template = "{% for m in messages %}<start>{{ m['content'] }}<stop>{% endfor %}<reply>"
    other.eos_token = "<|end|>"
    prompt, chosen, rejected = pair_texts(pair, other)
    assert prompt == f"<start>{pair.question}<stop><reply>"
    assert chosen == pair.chosen.removesuffix(EOS) + "<|end|>" and rejected.endswith("<|end|>")
    verbatim = PreferencePair("p", "c", "r", Corruption.none)
    assert pair_texts(verbatim, other) == ("p", "c", "r")
