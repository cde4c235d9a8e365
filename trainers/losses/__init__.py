"""Losses and advantage estimators: small pure functions, tensors in, tensors out (no ray, deepspeed or vllm)."""
