"""Programmatic verifiers: the Verdict record, the verifier protocol and the verifier worker pool."""
