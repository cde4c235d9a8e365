"""The policy network: a transformers LlamaForCausalLM (RoPE, RMSNorm, SwiGLU; eqs. 13-16) built
from a small config, or any HF causal-LM directory."""
from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from modeling.config import ModelConfig, Precision


def build_llama(cfg: ModelConfig, tokenizer, seed: int) -> LlamaForCausalLM:
    """A freshly initialised Llama whose vocabulary and special ids match `tokenizer`."""
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads, max_position_embeddings=cfg.max_seq_len,
        rope_theta=cfg.rope_theta, tie_word_embeddings=cfg.tie_embeddings,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, torch_dtype="float32")
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def check_causal_lm_dir(path: str | Path) -> None:
    """Fail with one clear line unless `path` holds an HF causal language model."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such model folder")
    if not (path / "config.json").is_file():
        raise ValueError(f"{path} is not an HF model directory (no config.json)")
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path / 'config.json'}: not readable JSON ({e})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path / 'config.json'}: a JSON object is expected")
    model_type, architectures = config.get("model_type"), config.get("architectures") or []
    if architectures and not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        raise ValueError(f"{path} holds a {'/'.join(architectures)}, not a causal LM")
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ValueError(f"{path} holds a '{model_type}' model, not a causal LM "
                         f"(transformers has no AutoModelForCausalLM for it)")


def load_causal_lm(path: str | Path, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    check_causal_lm_dir(path)
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)


class ModelHead(Enum):
    causal_lm = "causal_lm"
    """The policy: next-token logits over the vocabulary."""
    scalar = "scalar"
    """A reward model R_phi: the policy's backbone with a scalar head read at the last non-pad token."""
    value = "value"
    """A critic V_psi: the policy's backbone with a scalar head read at every position."""


class Fp32Head(torch.nn.Linear):
    """A scalar head that computes in fp32 under autocast and from weights of any dtype. Its output is a reward
    or a value whose small differences matter: in bf16 (8 significant bits) two answers that differ in one
    number scored the same, so Bradley-Terry saw ties and learnt nothing from such pairs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            bias = None if self.bias is None else self.bias.float()
            return torch.nn.functional.linear(x.float(), self.weight.float(), bias)


def fp32_head(model: PreTrainedModel) -> PreTrainedModel:
    """`model` with its `score` Linear replaced by an Fp32Head holding the same parameters (names unchanged)."""
    old = model.score
    head = Fp32Head(old.in_features, old.out_features, bias=old.bias is not None, device="meta")
    head.weight, head.bias = old.weight, old.bias
    model.score = head
    return model


def load_reward_model(path: str | Path, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """A sequence-classification model with one output. From a causal-LM directory the backbone loads
    and the scalar head starts at random; from a reward-model directory everything loads."""
    config = AutoConfig.from_pretrained(str(path))
    if config.pad_token_id is None:  # e.g. Qwen2.5 names its pad token in the tokenizer only
        from transformers import AutoTokenizer
        config.pad_token_id = AutoTokenizer.from_pretrained(str(path)).pad_token_id
    if config.pad_token_id is None:
        raise ValueError(f"{path}: a reward model needs a pad token (in its config or tokenizer): it reads the "
                         f"last non-pad token")
    config.num_labels = 1
    with torch.random.fork_rng():
        torch.manual_seed(0)  # a new scalar head starts the same in every run
        return fp32_head(AutoModelForSequenceClassification.from_pretrained(str(path), config=config, dtype=dtype))


def load_value_model(path: str | Path, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """A token-classification model with one output per position (a critic). From a causal-LM directory
    the backbone loads and the value head starts at random (the same in every run)."""
    config = AutoConfig.from_pretrained(str(path))
    config.num_labels = 1
    config.classifier_dropout = 0.0  # values are read without dropout at rollout time; train on the same features
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return fp32_head(AutoModelForTokenClassification.from_pretrained(str(path), config=config, dtype=dtype))


def load_model(path: str | Path, head: ModelHead) -> PreTrainedModel:
    if head == ModelHead.scalar:
        return load_reward_model(path)
    if head == ModelHead.value:
        return load_value_model(path)
    return load_causal_lm(path)


def compile_blocks(model: PreTrainedModel) -> None:
    """torch.compile every transformer block of `model` in place (its base model's `layers`), so parameter
    names, state dicts and checkpoints stay those of the eager model."""
    blocks = getattr(model.base_model, "layers", None)
    if blocks is None:
        raise ValueError(f"learner.compile: {type(model).__name__} has no transformer blocks at base_model.layers")
    for block in blocks:
        block.compile()


def role_device(gpus: float, role: str) -> torch.device:
    """The device a role computes on: the GPU Ray gave its actor when it reserved any share of one (Ray makes
    it device 0 there), else the CPU. A role that reserved a GPU and sees none is an error, never a CPU run."""
    if gpus <= 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(f"{role}: reserved {gpus} GPU but this process sees no CUDA device")
    return torch.device("cuda", 0)


def computes_in_bf16(precision: Precision, device: torch.device) -> bool:
    """Whether forward passes on `device` run under bf16 autocast; auto asks the hardware itself."""
    if precision != Precision.auto:
        return precision == Precision.bf16
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def matmul_params(config) -> int:
    """Parameters that take part in a matmul per token: every Linear weight, plus the output
    projection W_out (counted even when tied to the embedding, whose lookup costs no FLOPs)."""
    d, L, V = config.hidden_size, config.num_hidden_layers, config.vocab_size
    head_dim = getattr(config, "head_dim", None) or d // config.num_attention_heads
    kv = config.num_key_value_heads * head_dim
    attn = d * d * 2 + d * kv * 2
    mlp = 3 * d * config.intermediate_size
    return L * (attn + mlp) + V * d


def train_flops_per_token(config, seq_len: int) -> float:
    """Forward + backward FLOPs per trained token: 6 N for the matmuls plus 12 L d T for attention
    scores and the weighted sum (Kaplan et al. 2020; PaLM appendix B), with causal masking ignored."""
    return 6 * matmul_params(config) + 12 * config.num_hidden_layers * config.hidden_size * seq_len


def config_from_dir(path: str | Path):
    return AutoConfig.from_pretrained(str(path))
