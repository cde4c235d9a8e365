"""Checkpoint folders that are never half-written: each is built under a temporary name, renamed
into place, and only then named in `latest` (itself replaced atomically)."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional


@dataclass
class DriverState:
    """What the driver needs to continue exactly where a checkpoint was taken."""
    step: int              # optimizer steps done; also the data position (batches are a function of step)
    tokens_seen: int
    policy_version: int    # bumped by every optimizer step
    kl_coef: Optional[float] = None  # ppo with an adaptive KL coefficient: its current value


class Checkpoints:
    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def staging(self, step: int) -> Path:
        """An empty folder to write step `step` into; commit() moves it into place."""
        path = self.folder / f"step_{step:06d}.tmp"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def commit(self, staging: Path, state: DriverState) -> Path:
        (staging / "state.json").write_text(json.dumps(asdict(state)))
        final = staging.with_suffix("")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        _write_atomic(self.folder / "latest", final.name)
        return final

    def latest(self) -> Path | None:
        pointer = self.folder / "latest"
        if not pointer.is_file():
            return None
        path = self.folder / pointer.read_text().strip()
        return path if (path / "state.json").is_file() else None

    @staticmethod
    def state(checkpoint: Path) -> DriverState:
        return DriverState(**json.loads((checkpoint / "state.json").read_text()))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def publish_dir(source: Path, target: Path) -> None:
    """Copy a finished folder to `target` atomically (replacing an older one)."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def resume_stage(learners, checkpoints: Checkpoints, log, stage: str, resume: bool) -> DriverState | None:
    """With resume and a checkpoint: load it on every rank, drop the log's records past it, and return
    its state. Otherwise empty the log and return None (the stage starts at step 0)."""
    latest = checkpoints.latest() if resume else None
    if latest is None:
        log.truncate_after(-1)
        return None
    learners.every_rank(lambda a: a.load.remote(str(latest)), "load checkpoint")
    state = Checkpoints.state(latest)
    log.truncate_after(state.step)
    print(f"[{stage}] resumed from {latest} at step {state.step}")
    return state
