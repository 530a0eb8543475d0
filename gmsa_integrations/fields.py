"""The fields the LangChain and LlamaIndex classes share, declared once (pydantic mixins).

Generation fields default to None: the checkpoint's `GenerationSettings` (gmsa.config) then decide, so
generation defaults live in one place.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from gmsa.plan import budget_positions
from gmsa_integrations.cache import SoftTokenCache
from gmsa_integrations.runtime import GMSARuntime


class RuntimeFields(BaseModel):
    """Which GMSA model, where; the model loads on first use (`runtime`), never at construction, and is
    shared by every instance on the same checkpoint/device/dtype."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    checkpoint: str | None = None
    """GMSA checkpoint folder; None: the bundled default."""
    device: str | None = None
    """"cuda", "cpu", ...; None: CUDA when present."""
    dtype: str | None = None
    """The base model's weights: "float32", "bfloat16" or "float16"; None: bfloat16 on CUDA, float32 on the CPU."""
    soft_token_cache: SoftTokenCache | None = Field(default=None, exclude=True)
    """Where soft tokens are cached; None: the process-wide in-memory cache."""
    store: str | None = None
    """A soft-token store built at ingest (`gmsa index`, `gmsa.store.ingest`): texts it holds are never encoded."""
    _runtime: GMSARuntime | None = PrivateAttr(default=None)

    @field_validator("checkpoint", "store", mode="before")
    @classmethod
    def _path_as_text(cls, value: object) -> object:
        return os.fspath(value) if isinstance(value, os.PathLike) else value  # a pathlib.Path is a path too

    def __getstate__(self) -> dict:
        """Pickled without the runtime (a lock and a model handle): it is rebuilt lazily after unpickling, and
        finds the process's shared model again (`gmsa_integrations.runtime.shared_model`)."""
        state = super().__getstate__()
        state["__pydantic_private__"] = {**(state.get("__pydantic_private__") or {}), "_runtime": None}
        return state

    @property
    def runtime(self) -> GMSARuntime:
        if self._runtime is None:
            self._runtime = GMSARuntime(self.checkpoint, self.device, self.dtype, self.soft_token_cache, self.store)
        return self._runtime


class CompressorFields(RuntimeFields):
    """What a compressor (LangChain) or node postprocessor (LlamaIndex) is asked to do: by default, send the
    retrieved texts within a budget (the most relevant whole, the rest as soft tokens at rates that follow
    relevance, `gmsa.plan`), or compress every text at one fixed `rate`."""

    budget: StrictFloat | StrictInt | StrictStr | None = None
    """Decoder positions the texts may take: a fraction of their tokens in (0, 1], a number of positions, or
    "auto" (the default when no rate is given: short texts whole, else a quarter)."""
    rate: StrictInt | None = None
    """One fixed compression rate for every text instead of a budget."""
    relevance: Literal["minilm", "retriever", "order"] = "minilm"
    """Where relevance comes from: the bundled all-MiniLM-L6-v2, the retriever's scores (LangChain:
    metadata["relevance_score"]; LlamaIndex: NodeWithScore.score), or the given order (first: most relevant)."""
    top_n: StrictInt | None = Field(default=None, ge=1)
    """Keep only the `top_n` texts closest to the query (all-MiniLM-L6-v2)."""
    score_threshold: float | None = Field(default=None, allow_inf_nan=False)
    """Keep only texts at least this similar to the query (cosine, all-MiniLM-L6-v2)."""
    reorder: bool | Literal["first", "last"] = False
    """With a fixed rate: True or "first" puts the most relevant text first, "last" last, next to the question
    (what the bundled default reads best, lab/LOG.md "Reranking"). A budget always sends the most relevant last."""

    @model_validator(mode="after")
    def _rate_or_budget(self) -> CompressorFields:
        if self.rate is not None and self.budget is not None:
            raise ValueError(f"pass a rate ({self.rate}) or a budget ({self.budget!r}), not both")
        if self.budget is not None:
            budget_positions(self.budget, 1)  # the budget's own checks, with their messages
        return self


class GenerationFields(RuntimeFields):
    """How the decoder generates; None: the checkpoint's setting (greedy, no repetition penalty)."""

    temperature: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)
    """0: greedy decoding; > 0 samples; None: the checkpoint's setting."""
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    """Nucleus sampling (with temperature > 0)."""
    repetition_penalty: float | None = Field(default=None, gt=0.0)
    """1.0 disables it; None: the checkpoint's (1.0 for the bundled default)."""
    extractive: bool = False
    """Replies quote the compressed documents (constrained decoding, `gmsa.decode.extractive`): for factoid
    QA, where an answer is a span of a document."""
