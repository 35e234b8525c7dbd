"""Evaluators: anomaly scores, detection metrics, latent codes and their disentanglement."""
