"""Real Ray, DeepSpeed and vLLM on CPU, on a tiny model and corpus built once per session."""
from pathlib import Path

import pytest

from data.config import CorpusConfig, SourceConfig, SourceKind, TokenizerConfig
from modeling.config import ModelConfig

# head_dim = 64 / 2 = 32: vLLM's CPU attention kernels support head sizes 32, 64, 80, ... but not 16.
TINY_MODEL = ModelConfig(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128,
                         max_seq_len=128)


@pytest.fixture(scope="session")
def ray_cluster():
    import ray
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """tokenizer/ and data/ of a small arithmetic + Shakespeare corpus, plus init/ (a fresh tiny Llama)."""
    from data.prepare import prepare_corpus
    from data.tokenizer import load_tokenizer
    from modeling.model import build_llama
    root = tmp_path_factory.mktemp("tiny")
    corpus = CorpusConfig(sources=[
        SourceConfig(SourceKind.reasoning_gym, "chain_sum", 400, options={"max_digits": 2, "max_terms": 3})],
        held_out_fraction=0.1)
    prepare_corpus(TokenizerConfig(vocab_size=320), corpus, 0, 128, root / "tokenizer", root / "data")
    tokenizer = load_tokenizer(root / "tokenizer")
    build_llama(TINY_MODEL, tokenizer, seed=0).save_pretrained(str(root / "init"))
    tokenizer.save_pretrained(str(root / "init"))
    return root
