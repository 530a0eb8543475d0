"""gmsa: GMSA soft-prompt context compression (Group Merging + Layer Semantic Alignment)."""

from gmsa.answer import Answer
from gmsa.config import EMBEDDED_BASE, GenerationSettings, GMSAConfig, PromptFormat
from gmsa.errors import CheckpointError, ConfigError, DataError, GMSAError
from gmsa.model import GMSA
from gmsa.store import SoftTokenStore, ingest

__all__ = [
    "EMBEDDED_BASE",
    "GMSA",
    "Answer",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "GMSAConfig",
    "GMSAError",
    "GenerationSettings",
    "PromptFormat",
    "SoftTokenStore",
    "ingest",
]
__version__ = "0.1.0"
