"""Evaluating GMSA: reconstruction and QA metrics, and the gmsa-eval runner."""
