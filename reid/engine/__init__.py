"""Training engine: the loop, the per-mini-batch history, checkpoints, torchrun support."""
