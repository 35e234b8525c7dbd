"""Models: the registry, Flax networks, pure objectives and estimators, and the batched inference apply."""
