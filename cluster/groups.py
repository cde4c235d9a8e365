"""Starting each role's actor group."""
from __future__ import annotations

from cluster.actor_group import ActorGroup, Bundle, Pending
from modeling.model import ModelHead
from trainers.config import LearnerConfig
from trainers.learners.learner import Learner


def learner_env(cfg: LearnerConfig) -> dict[str, str]:
    """Set before torch is imported in the actor process."""
    return {
        "DS_ACCELERATOR": "cuda" if cfg.gpus_per_rank > 0 else "cpu",
        "OMP_NUM_THREADS": str(cfg.threads_per_rank),
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
    }


def start_learners(cfg: LearnerConfig, model_dir: str, total_steps: int, colocated: Bundle | None = None,
                   head: ModelHead = ModelHead.causal_lm, actor_class: type[Learner] = Learner,
                   role: str = "learner") -> ActorGroup[Learner]:
    """One `actor_class` actor per rank (a Learner, or PolicyLearner/CriticLearner for the alignment
    loops), joined in a process group, each holding `model_dir` under DeepSpeed (as a policy; with
    head=scalar as a reward model; with head=value as a critic).
    colocated: room left in each rank's bundle for a rollout worker (RolloutPool(shared=...))."""
    group, setting_up = launch_learners(cfg, model_dir, total_steps, colocated, head, actor_class, role)
    setting_up.result("join the process group and load the model")
    return group


def launch_learners(cfg: LearnerConfig, model_dir: str, total_steps: int, colocated: Bundle | None = None,
                    head: ModelHead = ModelHead.causal_lm, actor_class: type[Learner] = Learner,
                    role: str = "learner") -> tuple[ActorGroup[Learner], Pending]:
    """start_learners without waiting for the ranks' set-up (the caller starts other roles meanwhile and
    then waits on the Pending)."""
    bundles = [Bundle(cfg.cpus_per_rank, cfg.gpus_per_rank)] * cfg.num_ranks
    group = ActorGroup(role, actor_class, bundles, lambda rank: (rank, cfg.num_ranks, cfg, total_steps),
                       timeout_s=cfg.timeout_s, env=learner_env(cfg), room=colocated)
    host, port = group.rank0(lambda a: a.node_address.remote(), "find a rendezvous port")
    return group, group.start_every_rank(lambda a: a.setup.remote(host, port, model_dir, head))
