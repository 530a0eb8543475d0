"""Training GMSA: the autoencoder stage, then knowledge-extraction fine-tuning (KEFT)."""
