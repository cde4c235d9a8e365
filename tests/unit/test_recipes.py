"""Every shipped recipe loads, starts the roles it should, and `tether plan --resources` checks it
against a hypothetical cluster without starting or joining Ray."""
from pathlib import Path

import pytest

from cluster.cli import main
from cluster.config import load_job_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
ROLES = {  # the roles each recipe's stages start, over all its stages
    "tiny.yaml": {"learner", "rollout", "verifier", "reward_model", "reference", "critic"},
    "gsm8k_smollm2_cpu.yaml": {"learner", "rollout", "verifier", "reference"},
    "tools.yaml": {"learner", "rollout", "verifier", "reference"},
    "tools_search.yaml": {"learner", "rollout", "verifier"},
    "gpu/grpo_gsm8k.yaml": {"learner", "rollout", "verifier", "reference"},
    "gpu/ppo_rm.yaml": {"learner", "rollout", "reward_model", "reference", "critic"},
}
BIG = "CPU=64,GPU=8"


def plan(capsys, config: str, *extra: str) -> tuple[int, str, str]:
    code = main(["plan", str(CONFIGS / config), *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def planned_roles(out: str) -> set[str]:
    """The role column of the table, between its header and the 'peak stage' line."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("role")) + 1
    end = next(i for i, line in enumerate(lines) if line.startswith("peak stage"))
    return {line.split()[0] for line in lines[start:end]}


def test_every_gpu_recipe_is_listed():
    assert {f"gpu/{p.name}" for p in (CONFIGS / "gpu").glob("*.yaml")} == {c for c in ROLES if c.startswith("gpu/")}


@pytest.mark.parametrize("config", sorted(ROLES))
def test_recipe_fits_a_big_cluster(capsys, monkeypatch, config):
    load_job_config(CONFIGS / config)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # nothing listens there: joining would fail
    code, out, err = plan(capsys, config, "--resources", BIG)
    assert code == 0, err
    assert "hypothetical cluster" in out and out.rstrip().endswith("fits")
    assert planned_roles(out) == ROLES[config]


@pytest.mark.parametrize("config", sorted(ROLES))
def test_recipe_does_not_fit_a_small_cluster(capsys, config):
    code, out, _ = plan(capsys, config, "--resources", "CPU=1")
    assert code == 1 and "DOES NOT FIT: needs" in out and "CPU at its busiest stage, the cluster has 1" in out


@pytest.mark.parametrize("config", [c for c in sorted(ROLES) if c.startswith("gpu/")])
def test_gpu_recipe_needs_every_gpu(capsys, config):
    code, out, _ = plan(capsys, config, "--resources", "CPU=64,GPU=7")
    assert code == 1 and "needs 8 GPU at its busiest stage, the cluster has 7" in out


def test_gpu_recipes_use_nccl_and_zero():
    for config in (c for c in ROLES if c.startswith("gpu/")):
        job = load_job_config(CONFIGS / config)
        assert job.learner.gpus_per_rank == 1 and job.rollout.gpus_per_worker == 1, config
        assert job.learner.zero_stage in (2, 3) and job.learner.precision.value == "bf16", config


def test_overrides_apply_before_planning(capsys):
    code, out, _ = plan(capsys, "gpu/grpo_gsm8k.yaml", "rollout.num_workers=4", "--resources", BIG)
    assert code == 1 and "needs 9 GPU" in out


@pytest.mark.parametrize("given", ["CPU", "CPU=x", "CPU=64,,GPU=8", "=4", "CPU=-1"])
def test_bad_resources_are_one_line(capsys, given):
    code, out, err = plan(capsys, "tiny.yaml", f"--resources={given}")
    assert code == 2 and not out and err.count("\n") == 1 and "--resources" in err
