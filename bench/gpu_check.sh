#!/usr/bin/env bash
# The GPU check (`make gpu-check`), on one GPU: the tests marked gpu, the tiny pipeline with every role on the
# GPU (rollout.engine=reference, colocated), and the learner benchmark. Each part has its own time limit and
# log; a part that fails does not stop the others. Logs go to $OUT (the device tool's folder), else
# runs/gpu-check.
#     bash bench/gpu_check.sh [tests] [pipeline] [bench]      (default: all three; about 12 minutes on a
#     fresh H200, so on a device with a 10-minute call run `tests`, then `pipeline bench`)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-check}
PY=${PYTHON:-python3}
RUNS=${RUNS:-/tmp/tether-gpu-runs}
mkdir -p "$OUT" "$RUNS"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
parts=${*:-tests pipeline bench}
failed=0

part() {  # name, limit in seconds, command...
    local name=$1 limit=$2 start rc
    shift 2
    start=$(date +%s)
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    echo "== $name: exit $rc after $(( $(date +%s) - start )) s"
    tail -n 8 "$OUT/$name.log"
    [ "$rc" -eq 0 ] || failed=1
}

# Every role on one GPU: learner 0.25 + its colocated rollout worker 0.2, the critic 0.25, pi_ref 0.1, R_phi 0.1.
PIPELINE=(name=gpu-check "runs_dir=$RUNS" "stages=[tokenizer,pretrain,sft,reward_model,grpo,ppo,dpo]"
  cluster.num_cpus=16 tokenizer.vocab_size=512 tokenizer.train_chars=2000000
  model.hidden_size=128 model.num_layers=2 model.num_heads=2 model.num_kv_heads=2 model.intermediate_size=256
  model.max_seq_len=128 pretrain.seq_len=64 pretrain.steps=40 pretrain.eval_every=20 pretrain.checkpoint_every=20
  pretrain.eval_batches=4
  learner.num_ranks=1 learner.zero_stage=2 learner.micro_batch=16 learner.precision=bf16 learner.gpus_per_rank=0.25
  learner.cpus_per_rank=1 learner.threads_per_rank=1 learner.warmup_steps=5
  rollout.engine=reference rollout.colocate=true rollout.gpus_per_worker=0.2 rollout.cpus_per_worker=1
  grpo.async_rollout.max_staleness=0   # colocated engines sleep while the learners train: nothing samples ahead
  rollout.dtype=bfloat16 reference.gpus=0.1 reference.cpus=0.5
  rewards.reward_model.gpus=0.1 rewards.reward_model.cpus=0.5
  "reward_model.pairs=[{name: chain_sum, count: 80, options: {max_digits: 2}}]" reward_model.steps=6
  reward_model.warmup_steps=1 reward_model.eval_every=3 reward_model.checkpoint_every=3 reward_model.max_len=128
  tasks.train.count=64 tasks.held_out.count=8 tasks.eval_samples=2 tasks.eval_k=2 tasks.max_new_tokens=16
  sft.steps=20 sft.warmup_steps=1 sft.batch_size=16 sft.eval_every=10 sft.checkpoint_every=10
  grpo.steps=3 grpo.prompts_per_step=4 grpo.group_size=4 grpo.update.minibatch_size=16 grpo.eval_every=3
  grpo.checkpoint_every=3 ppo.steps=2 ppo.prompts_per_step=4 ppo.samples_per_prompt=4 ppo.critic_init=reward_model
  ppo.update.minibatch_size=16 ppo.eval_every=2 ppo.checkpoint_every=2
  "dpo.pairs=[{name: chain_sum, count: 40, options: {max_digits: 2}}]" dpo.steps=2 dpo.warmup_steps=0
  dpo.eval_every=1 dpo.checkpoint_every=2 dpo.max_len=128 eval.prompts=16)

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
for p in $parts; do
  case $p in
    tests) part tests 240 "$PY" -m pytest -q -x -s -m gpu -p no:cacheprovider tests/integration/test_gpu.py ;;
    pipeline) rm -rf "$RUNS/gpu-check"
              part pipeline 300 "$PY" -m cluster.cli run configs/tiny.yaml "${PIPELINE[@]}"
              cp "$RUNS/gpu-check/report.md" "$OUT/report.md" 2>/dev/null
              cp "$RUNS/gpu-check/timings.json" "$OUT/timings.json" 2>/dev/null ;;
    bench) part bench 180 "$PY" bench/gpu_pretrain_throughput.py --steps 30 --warmup 5 --compile
           cp docs/benchmarks.md "$OUT/benchmarks.md" ;;
    *) echo "unknown part '$p' (allowed: tests pipeline bench)"; exit 2 ;;
  esac
done
[ -f "$OUT/report.md" ] && echo "report.md: $(grep -c . "$OUT/report.md") lines"
exit $failed
