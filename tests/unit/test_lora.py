"""LoRA helpers on a real tiny Llama: merged weights give the adapted model's logits, Omega by hand, only the
adapters train, and the adapter tensors carry the names peft saves (what vLLM loads)."""
import peft
import pytest
import torch

from modeling.config import ModelConfig
from modeling.model import build_llama
from trainers.config import LoraConfig
from trainers.learners.lora import (
    adapter_anchor,
    adapter_scale,
    adapter_state_dict,
    adapter_updates,
    add_adapters,
    merged_state_dict,
    omega_ewc,
    omega_l2,
    squared_gradients,
)

CFG = ModelConfig(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128, max_seq_len=64)


class Vocab:             # build_llama reads the vocabulary size and special ids from a tokenizer
    def __len__(self):
        return 100
    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2


@pytest.fixture
def adapted():
    torch.manual_seed(0)
    model = add_adapters(build_llama(CFG, Vocab(), seed=0), LoraConfig(rank=4, alpha=8, targets=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)              # B starts at 0; give the adapter an effect
    return model


def test_merged_weights_give_the_adapted_models_logits(adapted):
    tokens = torch.randint(3, 100, (2, 12))
    plain = build_llama(CFG, Vocab(), seed=1)
    state = merged_state_dict(dict(adapted.state_dict()), adapter_scale(LoraConfig(rank=4, alpha=8)))
    assert set(state) == set(plain.state_dict())
    plain.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(plain(tokens).logits, adapted(tokens).logits, atol=1e-5, rtol=1e-5)
        base = adapted.get_base_model()
        with adapted.disable_adapter():
            assert (base(tokens).logits - plain(tokens).logits).abs().max() > 1e-3   # the adapter did matter


def test_only_adapters_train(adapted):
    trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert len(trainable) == 2 * 2 * 2          # layers x (q, v) x (A, B)


def test_omega_is_the_squared_distance_to_the_anchor(adapted):
    anchor = adapter_anchor(adapted)
    assert omega_l2(adapted, anchor).item() == 0.0
    name = next(n for n in anchor if "lora_A" in n)
    with torch.no_grad():
        dict(adapted.named_parameters())[name][0, :3] += torch.tensor([0.1, -0.2, 0.3])
    assert omega_l2(adapted, anchor).item() == pytest.approx(0.01 + 0.04 + 0.09, rel=1e-5)


def test_adapter_updates_are_what_merging_adds(adapted):
    scale = adapter_scale(LoraConfig(rank=4, alpha=8))
    merged = merged_state_dict(dict(adapted.state_dict()), scale)
    plain = build_llama(CFG, Vocab(), seed=0).state_dict()        # the same backbone, no adapter
    updates = adapter_updates(adapted, scale)
    assert len(updates) == 4
    for module, delta in updates.items():
        name = module.removeprefix("base_model.model.") + ".weight"
        torch.testing.assert_close(delta, merged[name] - plain[name], atol=1e-6, rtol=0)


def test_omega_ewc_weighs_each_update_by_its_fisher():
    updates = {"a": torch.tensor([[1.0, -2.0]]), "b": torch.tensor([[3.0]])}
    fisher = {"a": torch.tensor([[0.5, 2.0]]), "b": torch.tensor([[0.0]])}
    assert omega_ewc(updates, fisher).item() == pytest.approx(0.5 * 1 + 2.0 * 4 + 0.0)


def test_squared_gradients_are_the_starting_models_per_row(adapted):
    """Brute force: each row's gradient on a copy of the backbone with no adapter, squared and summed."""
    rows = torch.randint(3, 100, (3, 10))

    def loss_of(model):
        return lambda row: torch.nn.functional.cross_entropy(model(row[:, :-1]).logits[0], row[0, 1:])

    sums = squared_gradients(adapted, rows, loss_of(adapted))
    assert all(not w.requires_grad for n, w in adapted.named_parameters() if "base_layer" in n)
    plain = build_llama(CFG, Vocab(), seed=0)
    expected = {}
    for row in rows:
        plain.zero_grad()
        loss_of(plain)(row[None]).backward()
        for module, p in plain.named_modules():
            if module.endswith(("q_proj", "v_proj")):
                expected[module] = expected.get(module, 0) + p.weight.grad ** 2
    assert len(sums) == len(expected) == 4
    for module, total in sums.items():
        torch.testing.assert_close(total, expected[module.removeprefix("base_model.model.")], atol=1e-7, rtol=1e-4)


def test_adapter_tensors_carry_peft_file_names(adapted):
    ours = adapter_state_dict({k: p for k, p in adapted.named_parameters() if p.requires_grad})
    assert set(ours) == set(peft.get_peft_model_state_dict(adapted))


def test_unknown_target_is_a_clear_error():
    with pytest.raises(ValueError, match=r"lora.targets \['qkv'\]"):
        add_adapters(build_llama(CFG, Vocab(), seed=0), LoraConfig(targets=["qkv"]))


@pytest.mark.parametrize("overrides,message", [
    (["stages=[grpo]", "learner.lora={rank: 8}", "learner.zero_stage=3"], "needs learner.zero_stage 0, 1 or 2"),
    (["learner.lora={rank: 8}"], "not for stages with a scalar head (reward_model, ppo)"),
    (["stages=[grpo]", "rollout.lora_rank=8"], "needs learner.lora with rank <= rollout.lora_rank"),
    (["stages=[grpo]", "learner.lora={rank: 16}", "rollout.lora_rank=8"], "rank <= rollout.lora_rank"),
    (["stages=[grpo]", "learner.lora={rank: 8}", "rollout.lora_rank=12"], "vLLM serves ranks 1, 8, 16"),
    (["stages=[grpo]", "learner.lora={rank: 0}"], "rank >= 1"),
    (["stages=[pretrain]", "learner.lora={rank: 8, regulariser: ewc}"], "needs pretrain.retained set"),
    (["stages=[sft]", "pretrain.retained=runs/x/data", "learner.lora={regulariser: ewc}"], "no stage but tokenizer and pretrain (here also: "),
])
def test_lora_config_errors(overrides, message):
    from cluster.config import ConfigError, load_job_config
    with pytest.raises((ConfigError, ValueError), match=message.replace("(", r"\(").replace(")", r"\)")):
        load_job_config("configs/tiny.yaml", overrides)


def test_lora_config_accepted_for_policy_stages():
    from cluster.config import load_job_config
    job = load_job_config("configs/tiny.yaml", ["stages=[grpo]", "learner.lora={rank: 8, targets: [q_proj]}",
                                                "rollout.lora_rank=8"])
    assert job.learner.lora == LoraConfig(rank=8, targets=["q_proj"]) and job.rollout.lora_rank == 8
