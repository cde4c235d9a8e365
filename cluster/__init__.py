"""Driver side: job config, Ray start-up, actor groups, the pipeline runner and the `tether` CLI."""
