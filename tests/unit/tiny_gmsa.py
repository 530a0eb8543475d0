"""The tiny GMSA config in the shipped layout, and texts to compress: shared by the core unit tests."""

from gmsa import GMSAConfig

TEXTS = [
    "The quick brown fox jumps over the lazy dog. Paris is the capital of France and its largest city.",
    "Soft tokens are vectors.",
    "Group merging averages hidden states in groups of equal size.",
]


def tiny_fields(base, **overrides) -> dict:
    """Sizes for the tiny base; every layout field keeps its default: the shipped layout."""
    return {"base_model": str(base), "encoder_layers": 2, "lsa_layers": 1, "lora_rank": 4, "lora_alpha": 8,
            "rates": (2, 4), "segment_tokens": 16, **overrides}


def tiny_config(base, **overrides) -> GMSAConfig:
    return GMSAConfig(**tiny_fields(base, **overrides))
