"""Learners, models, tokenizers, data and the training stages."""
