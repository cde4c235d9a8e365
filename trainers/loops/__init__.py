"""The stage loops the driver runs: pretraining, the reward model, sft, grpo, ppo, rsft and dpo, and the
checkpoints they write."""
