"""Disentanglement metrics (MIG, FactorVAE, DCI, SAP) of codes against known factors."""
