"""The learner ranks (DeepSpeed ZeRO 0-3, one Ray actor each), the frozen reference, LoRA, the LR schedule,
and the typed batches the driver sends them."""
