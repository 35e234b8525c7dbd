"""Training: the state and the one train step, the host loop, checkpoints and TensorBoard summaries."""
