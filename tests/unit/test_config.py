import os
import re
import subprocess
from pathlib import Path

import pytest

from cluster.config import ConfigError, load_job_config
from cluster.stages import Stage
from data.config import Corruption


def error(*overrides, path=None):
    with pytest.raises(ConfigError) as e:
        load_job_config(path, list(overrides))
    return str(e.value)


def test_tiny_recipe_loads():
    job = load_job_config("configs/tiny.yaml", ["learner.num_ranks=2", "pretrain.steps=30"])
    assert job.stages == [Stage.tokenizer, Stage.pretrain, Stage.sft, Stage.reward_model, Stage.grpo,
                          Stage.rsft, Stage.ppo, Stage.dpo]
    assert job.learner.num_ranks == 2 and job.pretrain.steps == 30
    assert job.corpus.sources[1].options["max_digits"] == 2
    assert {c.stage for c in job.checks} == {s.value for s in job.stages if s != Stage.tokenizer}
    # the demo's PPO learns from a reward model of correct answers, not the sycophancy experiment's
    assert {k for p in job.reward_model.pairs for k in p.corruptions} == {Corruption.wrong, Corruption.final}
    assert job.ppo.assert_wrong is None and job.tasks.train.assert_wrong == 0 and not job.eval.in_stages


def test_sycophancy_recipe_loads():
    job = load_job_config("configs/sycophancy.yaml")
    assert job.stages == [Stage.tokenizer, Stage.pretrain, Stage.sft, Stage.reward_model, Stage.grpo,
                          Stage.sycophancy_ppo]
    assert Corruption.agree in {k for p in job.reward_model.pairs for k in p.corruptions}
    assert job.sycophancy_ppo.assert_wrong == job.grpo.assert_wrong == 1.0 and job.eval.in_stages


@pytest.mark.parametrize("check, message", [
    ("{stage: grpx, measure: eval/pass@1, end_at_least: 1}", "checks[0].stage='grpx': not a stage"),
    ("{stage: grpo, measure: eval/pass@1}", "checks[0] (grpo eval/pass@1): set at least one of change_at_least"),
    ("{stage: grpo, measure: eval/pass@1, at_least: 1}", "unknown config key 'at_least' (in Criterion)")])
def test_a_bad_check_names_itself(check, message):
    assert message in error(f"checks=[{check}]")


def test_rollout_threads_must_be_positive():
    assert "rollout.threads_per_worker: must be >= 1 or null" in error("rollout.threads_per_worker=0")
    assert load_job_config(None, ["rollout.threads_per_worker=2"]).rollout.threads_per_worker == 2


def test_unknown_key_names_key_and_allowed():
    msg = error("learner.zero_stag=2")
    assert "learner.zero_stag" in msg and "zero_stage" in msg


def test_unknown_key_inside_list_entry():
    msg = error("corpus.sources=[{kind: file, nme: x}]")
    assert "'nme'" in msg and "SourceConfig" in msg and "name" in msg


def test_wrong_type_and_enum():
    assert "learner.zero_stage" in error("learner.zero_stage=abc")
    msg = error("learner.precision=fp16")
    assert "fp32" in msg and "bf16" in msg


@pytest.mark.parametrize("override, words", [
    ("learner.zero_stage=4", "allowed 0, 1, 2, 3"),
    ("tokenizer.vocab_size=200", "needs at least 264"),
    ("stages=[pretrain,tokenizer]", "pipeline order"),
    ("model.hidden_size=100", "divisible"),
    ("pretrain.seq_len=1000", "max_seq_len"),
    ("corpus.sources=[{kind: file}]", "corpus.sources.0.name"),
    ("corpus.sources.0.kind=file", "list is set whole"),
    ("learner.warmup_steps=400", "warmup_steps"),
    ("rollout.colocate=true", "needs GPUs"),
    ("rollout.reference_batch_size=0", "reference_batch_size: must be > 0"),
    (("stages=[tokenizer,pretrain,sft]", "rollout.tensor_parallel_size=2", "rollout.gpus_per_worker=2"),
     "weight sync into a tensor-parallel engine"),
    (("learner.compile=true", "learner.zero_stage=3"), "learner.compile: needs learner.zero_stage 0, 1 or 2"),
    ("rewards.verifiers=[{fn: nope}]", "rewards.verifiers.0: verifier 'nope': not a built-in"),
    ("rewards.verifiers=[{fn: format, options: {colour: red}}]", "do not fit"),
    ("reward_model.held_out_fraction=0.7", "reward_model.held_out_fraction"),
    ("rewards.reward_model={path: x, from_stage: true}", "exactly one of"),
    ("rewards.reward_model={http: {url: 'ftp://x'}}", "http:// or https://"),
    ("reward_model.pairs=[{corruptions: []}]", "at least one corruption"),
    ("verifier_pool.concurrency=0", "verifier_pool"),
    (("stages=[grpo]", "grpo.group_size=1"), "group_size >= 2"),
    (("stages=[grpo]",), "grpo.reward=verifiers needs rewards.verifiers"),
    (("stages=[ppo]", "rewards.verifiers=[{fn: math}]"), "ppo.reward=reward_model needs rewards.reward_model"),
    (("stages=[ppo]", "ppo.critic_init=reward_model", "rewards.reward_model={http: {url: 'http://rm:8000/score'}}"),
     "ppo.critic_init=reward_model needs a local reward model"),
    (("stages=[ppo]", "ppo.samples_per_prompt=0"), "samples_per_prompt >= 1"),
    (("stages=[sycophancy_ppo]", "sycophancy_ppo.kl_bound=0"), "sycophancy_ppo: kl_bound and critic_lr must be > 0"),
    (("stages=[sycophancy_ppo]", "sycophancy_ppo.update.minibatch_size=20"), "sycophancy_ppo.update.minibatch_size=20"),
    (("stages=[sycophancy_ppo,ppo]", "tasks.train={kind: file, name: x.jsonl}"),
     "sycophancy_ppo.assert_wrong: only generated tasks"),
    (("stages=[sft]", "sft.assert_wrong=2"), "sft.assert_wrong: must be in [0, 1]"),
    (("stages=[sft]", "sft.batch_size=20"), "sft.batch_size=20: must be a multiple of"),
    (("stages=[sft]", "sft.min_lr_ratio=1.5"), "sft.min_lr_ratio: must be in [0, 1]"),
    (("stages=[grpo,ppo]", "grpo.update.min_lr_ratio=2"), "grpo.update.min_lr_ratio: must be in [0, 1]"),
    (("stages=[grpo,ppo]", "grpo.assert_wrong=1.5"), "grpo.assert_wrong: must be in [0, 1]"),
    (("stages=[grpo,ppo]", "ppo.assert_wrong=-0.1"), "ppo.assert_wrong: must be in [0, 1]"),
    (("stages=[grpo]", "rewards.verifiers=[{fn: math}]", "grpo.update.dual_clip=0.5"), "dual_clip"),
    (("stages=[dpo]", "dpo.beta=0"), "beta > 0"),
    (("stages=[rsft]", "rsft.rounds=2", "rsft.sft_steps=3", "rsft.warmup_steps=6"), "warmup_steps < rounds x sft_steps = 6"),
    ("tasks.eval_k=9", "tasks.eval_k"),
    ("tasks.min_new_tokens=100", "tasks.min_new_tokens"),
])
def test_impossible_combinations(override, words):
    assert words in error(*(override if isinstance(override, tuple) else (override,)))


def test_missing_config_file():
    assert "does not exist" in error(path="configs/nope.yaml")


def gpu_check_pipeline_overrides() -> list[str]:
    """The overrides bench/gpu_check.sh runs configs/tiny.yaml with, as bash expands them."""
    script = 'eval "$(sed -n "/^PIPELINE=(/,/)$/p" bench/gpu_check.sh)"; printf "%s\\n" "${PIPELINE[@]}"'
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "RUNS": "/tmp/gpu-check-runs"})
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.mark.parametrize("engine", ["vllm", "reference"])
def test_the_gpu_checks_colocated_recipe_loads(engine):
    overrides = gpu_check_pipeline_overrides()
    assert "rollout.colocate=true" in overrides and len(overrides) > 40
    job = load_job_config("configs/tiny.yaml", [*overrides, f"rollout.engine={engine}"])
    assert job.rollout.colocate and job.grpo.async_rollout.max_staleness == 0
    # the demo's grpo samples a step ahead, which colocated engines (asleep while the learners train) cannot
    without = [o for o in overrides if not o.startswith("grpo.async_rollout.")]
    assert "grpo.async_rollout.max_staleness=1: rollout.colocate" in error(*without, path="configs/tiny.yaml")


@pytest.mark.parametrize("avx512_bf16, amx, expected", [(False, False, False), (True, False, True), (False, True, True)])
def test_auto_precision_follows_the_cpu(monkeypatch, avx512_bf16, amx, expected):
    """auto: bf16 autocast only where the CPU has native bf16 (emulated bf16 is ~25x slower than fp32)."""
    import torch

    from modeling.config import Precision
    from modeling.model import computes_in_bf16
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    cpu = torch.device("cpu")
    assert computes_in_bf16(Precision.auto, cpu) is expected
    assert computes_in_bf16(Precision.bf16, cpu) is True and computes_in_bf16(Precision.fp32, cpu) is False
    assert load_job_config("configs/tiny.yaml", []).learner.precision == Precision.auto


def test_a_missing_reward_model_fails_before_any_actor_starts(monkeypatch, tmp_path):
    """rewards.reward_model.from_stage without the reward_model stage's output: one clear error, and no
    learner, rollout worker or verifier is started first (starting them takes a minute on a CPU)."""
    import cluster.groups
    from cluster.align_stages import alignment_roles
    from cluster.run_dir import RunDirError, RunPaths
    monkeypatch.setattr(cluster.groups, "start_learners", lambda *a, **k: pytest.fail("a learner was started"))
    job = load_job_config("configs/tiny.yaml", ["stages=[grpo]", f"runs_dir={tmp_path}"])
    with pytest.raises(RunDirError, match="no reward model at .*run the reward_model stage first"):
        with alignment_roles(job, RunPaths(tmp_path / "tiny"), Stage.grpo, tmp_path, job.learner, 1):
            pass


@pytest.fixture
def policy_dir(tmp_path):
    """A directory holding only a tokenizer: what the stages read before any actor starts."""
    from data.corpus import format_answer
    from data.tokenizer import format_prompt, train_tokenizer
    train_tokenizer([format_prompt("What is 12 + 7? I think the answer is 18.") + format_answer("12 + 7 = 19", "19")] * 40,
                    300, tmp_path / "policy", 128)
    return tmp_path / "policy"


def test_each_stage_learner_gets_its_own_lr_floor_and_step_size(monkeypatch, tmp_path, policy_dir):
    """The learner settings sft, grpo and ppo hand to their roles (actors and loops replaced by recorders)."""
    from contextlib import contextmanager

    import cluster.align_stages as stages
    import trainers.loops.grpo
    import trainers.loops.ppo
    import trainers.loops.sft
    from cluster.run_dir import RunPaths
    seen = {}

    @contextmanager
    def roles(job, paths, stage, base, learner_cfg, total_steps, reference=False, critic=None):
        seen[stage] = learner_cfg
        yield None

    monkeypatch.setattr(stages, "alignment_roles", roles)
    for module, loop in ((trainers.loops.sft, "run_sft"), (trainers.loops.grpo, "run_grpo"), (trainers.loops.ppo, "run_ppo")):
        monkeypatch.setattr(module, loop, lambda *args, **kwargs: None)
    common = [f"model.path={policy_dir}", "tasks.train.count=50", "learner.min_lr_ratio=0.1", "ppo.update.lr=3e-5",
              "ppo.update.minibatch_size=32"]
    for stage, overrides in ((Stage.sft, ["sft.min_lr_ratio=1.0"]), (Stage.grpo, ["grpo.update.min_lr_ratio=0.5"]),
                             (Stage.ppo, ["ppo.update.min_lr_ratio=null"]),
                             (Stage.sycophancy_ppo, ["sycophancy_ppo.critic_init=policy"])):
        job = load_job_config("configs/sycophancy.yaml", common + [f"stages=[{stage.value}]"] + overrides)
        stages.ALIGNMENT_STAGES[stage](job, RunPaths(tmp_path / stage.value))
    sft, grpo, ppo = seen[Stage.sft], seen[Stage.grpo], seen[Stage.ppo]
    assert (sft.lr, sft.min_lr_ratio, sft.grad_accum) == (1e-3, 1.0, 2)      # 32 rows = 2 ranks x 8 x 2
    assert (grpo.lr, grpo.min_lr_ratio, grpo.grad_accum) == (1e-4, 0.5, 8)   # 128 rows = 2 ranks x 8 x 8
    assert (ppo.lr, ppo.min_lr_ratio, ppo.grad_accum) == (3e-5, 0.1, 2)      # unset: learner.min_lr_ratio
    arm = seen[Stage.sycophancy_ppo]                                          # its own section, not ppo's
    assert (arm.lr, arm.min_lr_ratio, arm.grad_accum) == (1e-4, 0.1, 4)       # 64 rows = 2 ranks x 8 x 4


def test_the_rlhf_arm_starts_where_grpo_starts(tmp_path):
    """sycophancy_ppo starts from the policy grpo starts from (sft's), and no later stage starts from its output."""
    from cluster.run_dir import RunPaths, policy_model
    paths = RunPaths(tmp_path / "run")
    for stage in ("sft", "grpo", "sycophancy_ppo"):
        (paths.stage(Stage(stage)) / "model").mkdir(parents=True)
        (paths.stage(Stage(stage)) / "model" / "config.json").write_text("{}")
    job = load_job_config("configs/sycophancy.yaml", ["stages=[sft,grpo,sycophancy_ppo,rsft]"])
    assert policy_model(job, paths, Stage.sycophancy_ppo) == policy_model(job, paths, Stage.grpo) == paths.stage(Stage.sft) / "model"
    assert policy_model(job, paths, Stage.rsft) == paths.stage(Stage.grpo) / "model"
    alone = load_job_config("configs/sycophancy.yaml", ["stages=[sycophancy_ppo]", "model.path=/some/policy"])
    assert policy_model(alone, paths, Stage.sycophancy_ppo) == Path("/some/policy")
    later = load_job_config("configs/sycophancy.yaml", ["stages=[rsft]"])     # from this run dir: grpo's, never the arm's
    assert policy_model(later, paths, Stage.rsft) == paths.stage(Stage.grpo) / "model"


def test_grpo_and_ppo_carry_their_own_share_of_wrong_assertions(tmp_path, policy_dir):
    from cluster.align_stages import _start
    from cluster.run_dir import RunPaths
    overrides = [f"model.path={policy_dir}", "tasks.train.count=200", "tasks.train.assert_wrong=0.0"]
    job = load_job_config("configs/tiny.yaml", overrides + ["stages=[grpo]", "grpo.assert_wrong=1.0"])
    asserted = lambda tasks: sum("I think the answer is" in t.sample.prompt for t in tasks)  # noqa: E731
    _, _, train, held_out = _start(job, RunPaths(tmp_path / "run"), Stage.grpo, job.grpo.assert_wrong)
    assert asserted(train) == len(train) == 200 and asserted(held_out) == 0
    job = load_job_config("configs/tiny.yaml", overrides + ["stages=[ppo]", "ppo.assert_wrong=null"])
    _, _, train, _ = _start(job, RunPaths(tmp_path / "run"), Stage.ppo, job.ppo.assert_wrong)   # None: tasks.train's 0
    assert asserted(train) == 0
    half = load_job_config("configs/tiny.yaml", overrides + ["stages=[ppo]", "ppo.assert_wrong=0.5"])
    _, _, train, _ = _start(half, RunPaths(tmp_path / "run"), Stage.ppo, half.ppo.assert_wrong)
    assert 70 < asserted(train) < 130     # 200 seeded draws at 0.5
    job = load_job_config("configs/tiny.yaml", overrides + ["stages=[sft]", "sft.assert_wrong=0.25"])
    _, _, train, _ = _start(job, RunPaths(tmp_path / "run"), Stage.sft, job.sft.assert_wrong)
    assert 30 < asserted(train) < 70      # 200 seeded draws at 0.25
    job = load_job_config("configs/sycophancy.yaml", overrides + ["stages=[sycophancy_ppo]"])
    _, _, train, _ = _start(job, RunPaths(tmp_path / "run"), Stage.sycophancy_ppo, job.sycophancy_ppo.assert_wrong)
    assert asserted(train) == 200         # the experiment's value


def test_async_rollouts_and_episodes_are_checked_when_the_config_loads():
    job = load_job_config("configs/tiny.yaml", ["grpo.async_rollout.max_staleness=2",
                                                "grpo.episode={tools: [{fn: calculator}, {fn: search, options: {top_k: 1}}]}"])
    assert job.grpo.async_rollout.max_staleness == 2 and [t.fn for t in job.grpo.episode.tools] == ["calculator", "search"]
    assert job.ppo.episode is None and job.grpo.update.tis_cap == 2.0
    for overrides, message in [
        (["grpo.async_rollout.max_staleness=-1"], "max_staleness: must be >= 0"),
        (["grpo.update.tis_cap=0"], "tis_cap: must be > 0"),
        (["rollout.colocate=true", "rollout.gpus_per_worker=0.5", "learner.gpus_per_rank=0.5", "learner.num_ranks=1",
          "rollout.num_workers=1", "grpo.async_rollout.max_staleness=1"], "rollout.colocate gives each worker's GPU"),
        (["grpo.episode={tools: [{fn: calculator, options: {digits: 3}}]}"], "grpo.episode: tool 'calculator': options"),
        (["rsft.episode={tools: [{fn: abacus}]}", "stages=[rsft]"], "rsft.episode: tool 'abacus': not a built-in"),
        (["ppo.episode={max_episode_tokens: 4096}"], "ppo.episode: max_episode_tokens=4096"),
        (["grpo.episode={environment: 'tests.fixtures.environments:Nope'}"], "has no callable 'Nope'"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_job_config("configs/tiny.yaml", overrides)
