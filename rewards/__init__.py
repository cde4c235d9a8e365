"""Rewards: composition of verifier verdicts and reward-model scores into the scalar R(x, y) of Part 2."""
