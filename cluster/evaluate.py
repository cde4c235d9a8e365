"""`tether eval CHECKPOINT`: the evaluation suites on Ray roles. Rollout workers (vLLM) hold the checkpoint
and generate; verifier workers judge; the driver retrieves, measures and writes the results."""
from __future__ import annotations

from pathlib import Path

from cluster.job import JobConfig
from cluster.ray_cluster import connect
from evals.harness import VERIFIERS, EvalRow, run_suites, table, write_results


def evaluate_checkpoint(job: JobConfig, checkpoint: str, out_dir: Path) -> list[EvalRow]:
    """Start the roles, run job.eval on the checkpoint, write eval.json / eval.md / eval.png / samples.jsonl
    into out_dir, stop the roles."""
    from cluster.rollout_pool import RolloutPool
    from cluster.verifier_pool import VerifierPool
    from data.tokenizer import load_tokenizer
    from modeling.model import config_from_dir
    if not (Path(checkpoint) / "config.json").is_file():
        raise FileNotFoundError(f"{checkpoint} is not an HF model directory (no config.json)")
    tokenizer = load_tokenizer(checkpoint)
    out_dir.mkdir(parents=True, exist_ok=True)
    connect(job.cluster)
    pool = verifiers = None
    try:
        pool = RolloutPool(job.rollout, checkpoint, config_from_dir(checkpoint).max_position_embeddings)
        verifiers = VerifierPool(VERIFIERS, job.verifier_pool)
        rows = run_suites(pool, verifiers, tokenizer, job.eval, out_dir, out_dir / "samples.jsonl")
    finally:
        for role in (pool, verifiers):
            if role is not None:
                role.shutdown()
    write_results(rows, out_dir, f"eval of {checkpoint}")
    print(table(rows))
    return rows
