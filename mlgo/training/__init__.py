"""Training algorithms (bc, ppo, es), each readable top to bottom in its own module, plus the
small shared pieces they use: checkpoints, summaries, rollouts through the worker pool."""
