"""A run's folder under runs/<name>/: its paths, whether it may be used for this run, and which policy each
stage starts from (the pipeline runner and the stage runners read it)."""
from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from cluster.config import ConfigError, load_job_config, to_yaml
from cluster.job import JobConfig
from cluster.stages import POLICY_STAGES, STAGE_ORDER, Stage


@dataclass
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def stage(self, stage: Stage) -> Path:
        return self.root / stage.value


class RunDirError(RuntimeError):
    """The run directory cannot be used for this run."""


def _identity(job: JobConfig) -> str:
    """The parts of a config that define a run (how it is executed may change between invocations, and the
    folder holding it may move)."""
    same = dataclasses.replace(job, resume=False, runs_dir="", cluster=dataclasses.replace(job.cluster, address=None),
                               pretrain=dataclasses.replace(job.pretrain, stop_after_steps=None),
                               grpo=dataclasses.replace(job.grpo, stop_after_steps=None),
                               learner=dataclasses.replace(job.learner, timeout_s=0.0))
    return to_yaml(same)


def check_run_dir(job: JobConfig) -> RunPaths:
    """Fail unless the run directory is new, or holds this same run (which resume=true continues)."""
    paths = RunPaths(job.run_dir)
    if paths.config.is_file():
        try:
            previous = load_job_config(paths.config)
        except ConfigError:
            previous = None
        if previous is None or _identity(previous) != _identity(job):
            raise RunDirError(f"{paths.root} already holds a different run (see its config.yaml); "
                              f"choose another name=... or delete the folder")
    elif job.resume:
        raise RunDirError(f"resume=true, but {paths.root} holds no run to resume")
    return paths


def prepare_run_dir(job: JobConfig, paths: RunPaths) -> None:
    """Start afresh (same config, resume=false) or keep what is there, and record the resolved config."""
    if not job.resume:
        for stage in Stage:
            shutil.rmtree(paths.stage(stage), ignore_errors=True)
        for name in ("timings.json", "report.md"):
            (paths.root / name).unlink(missing_ok=True)
    paths.root.mkdir(parents=True, exist_ok=True)
    tmp = paths.config.with_name("config.yaml.tmp")
    tmp.write_text(to_yaml(job))
    os.replace(tmp, paths.config)


def policy_model(job: JobConfig, paths: RunPaths, stage: Stage) -> Path:
    """The policy `stage` starts from: the output of the last policy stage listed before it; with none
    listed, model.path; failing that, the latest earlier policy stage's output in this run directory.
    sycophancy_ppo starts where grpo starts: the two arms of the experiment differ only in their reward."""
    starts_as = Stage.grpo if stage == Stage.sycophancy_ppo else stage
    earlier = [s for s in STAGE_ORDER[:STAGE_ORDER.index(starts_as)] if s in POLICY_STAGES]
    listed = [s for s in earlier if s in job.stages]
    if listed:
        model = paths.stage(listed[-1]) / "model"
        if not (model / "config.json").is_file():
            raise RunDirError(f"{stage.value} starts from the {listed[-1].value} stage's output, but {model} does not exist")
        return model
    if job.model.path:
        return Path(job.model.path)
    for s in reversed(earlier):
        if (paths.stage(s) / "model" / "config.json").is_file():
            return paths.stage(s) / "model"
    raise RunDirError(f"no policy for {stage.value} to start from: no earlier stage's model in {paths.root} and "
                      f"model.path is not set; add 'pretrain' to stages or set model.path")


def stage_done(paths: RunPaths, stage: Stage) -> bool:
    """Whether `stage` has published its output (resume=true skips such a stage)."""
    if stage == Stage.tokenizer:
        return (paths.data / "meta.json").is_file() and (paths.tokenizer / "tokenizer.json").is_file()
    return (paths.stage(stage) / "model" / "config.json").is_file()
