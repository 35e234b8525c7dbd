"""Data: dataset sources (npz/IDX, the shipped mnist5k, generated shapes, TFDS), protocols, and the input pipeline."""
