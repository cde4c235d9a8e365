"""`ray job submit --working-dir . -- tether run ...` against a `ray start --head` cluster on this machine."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SHORT = ["stages=[tokenizer,pretrain]", "tokenizer.vocab_size=300",
         "corpus.sources=[{kind: reasoning_gym, name: chain_sum, count: 300, options: {max_digits: 2}}]",
         "corpus.held_out_fraction=0.1", "model.hidden_size=64", "model.num_layers=1", "model.num_heads=2",
         "model.num_kv_heads=2", "model.intermediate_size=64", "model.max_seq_len=64", "pretrain.seq_len=32",
         "pretrain.steps=3", "pretrain.eval_every=3", "pretrain.checkpoint_every=3", "pretrain.eval_batches=1",
         "learner.micro_batch=2", "learner.warmup_steps=1", "learner.cpus_per_rank=0.5", "learner.threads_per_rank=1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def head(tmp_path):
    """A Ray head with its own ports and temp dir; stopped by killing exactly its processes."""
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's unix socket paths have a length limit
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    ray_cli = str(Path(sys.executable).parent / "ray")
    if not (Path.home() / ".ray" / "auth_token").is_file():
        subprocess.run([ray_cli, "get-auth-token", "--generate"], env=env, check=True, capture_output=True)
    port, dashboard = free_port(), free_port()
    # Every port of its own: another local Ray (the session's embedded one) holds the defaults, and a
    # dashboard agent that cannot bind them never registers ("No available agent to submit job").
    ports = [f"--{name}={free_port()}" for name in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                     "metrics-export-port", "runtime-env-agent-port")]
    subprocess.run([ray_cli, "start", "--head", f"--port={port}", f"--dashboard-port={dashboard}", "--num-cpus=2",
                    f"--temp-dir={temp_dir}", "--disable-usage-stats", *ports], env=env, check=True,
                   capture_output=True, timeout=120)
    try:
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        for p in psutil.process_iter(["cmdline"]):
            if any(temp_dir in part for part in (p.info["cmdline"] or [])):
                p.send_signal(signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_job_submit_runs_the_pipeline_on_the_cluster(head, tmp_path):
    address, env = head
    runs = tmp_path / "runs"
    submit = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", address, "--working-dir",
              str(ROOT), "--", "tether", "run", "configs/tiny.yaml", "name=job", f"runs_dir={runs}", *SHORT]
    for _ in range(6):  # a fresh head takes a few seconds before its job agent accepts work
        done = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=600)
        if "No available agent" not in done.stderr:
            break
        time.sleep(5)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "succeeded" in done.stdout
    assert (runs / "job" / "pretrain" / "model" / "model.safetensors").is_file()
