"""Training: losses (pure functions) < learners (the ranks that run them) < loops (the stages that drive the
learners); config.py and align_config.py hold the package's knobs."""
