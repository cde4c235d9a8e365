"""Generation: the Rollout record and the engines that produce rollouts."""
