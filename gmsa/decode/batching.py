"""Concurrent requests to one model, gathered into batched generate calls.

A server (or a LangChain `batch`, a LlamaIndex async engine) calls the model from many threads at once.
Run one by one, each request waits for the others' whole generation; batched, the decoder reads all their
prompts in one left-padded pass per token. On a GPU that costs little more than one request; on a CPU the
prompts' prefill is compute-bound and only the decode steps are saved (BENCHMARKS.md, concurrent requests).

`GenerationBatcher.generate` blocks its caller until the reply is ready. A worker thread takes what is queued,
waits `window` seconds for more (up to `max_batch`), and runs one `GMSA.generate_chat` per group of requests
with the same settings. Greedy replies are identical to one-by-one calls (`GMSA.generate_chat` batches with
left padding); sampled requests run one at a time, so a seeded caller's draws do not depend on its neighbours.
A batch that fails is retried one request at a time, so an error reaches only the request that caused it.

    batcher = GenerationBatcher(model)
    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda c: batcher.generate(c), conversations))
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING

from gmsa.config import GenerationSettings
from gmsa.errors import ConfigError

if TYPE_CHECKING:
    from gmsa.decode.prompt import ChatMessage
    from gmsa.model import GMSA


@dataclasses.dataclass
class _Request:
    conversation: Sequence[ChatMessage]
    settings: GenerationSettings
    quote_from: Sequence[str] | None
    json_schema: dict | None
    reply: Future = dataclasses.field(default_factory=Future)

    def group(self) -> tuple:
        """Requests that can share one generate call: same settings, the same kind of constraint (quotes, JSON of
        any schema, none); sampled: alone."""
        if self.settings.do_sample:
            return ("sampled", id(self))
        return (dataclasses.astuple(self.settings), self.quote_from is None, self.json_schema is None)


class GenerationBatcher:
    """Gathers concurrent `generate` calls on one GMSA into batched `generate_chat` calls.

    window: seconds the worker waits, after the first request, for others to join its batch (a request that
        arrives while a batch runs joins the next one at once, so under load the window is rarely waited).
    max_batch: most requests in one generate call (memory grows with it).
    """

    def __init__(self, model: GMSA, window: float = 0.01, max_batch: int = 16) -> None:
        if not isinstance(window, (int, float)) or isinstance(window, bool) or not 0 <= window < 10:
            raise ConfigError(f"window={window!r} is invalid: seconds in [0, 10)")
        if not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1:
            raise ConfigError(f"max_batch={max_batch!r} is invalid: an integer >= 1")
        self.model, self.window, self.max_batch = model, float(window), max_batch
        self._queue: list[_Request] = []
        self._ready = threading.Condition()
        self._worker: threading.Thread | None = None
        self.batch_sizes: list[int] = []
        """The size of every generate call so far, the latest 10,000 (for benchmarks and tests)."""

    def generate(self, conversation: Sequence[ChatMessage], settings: GenerationSettings | None = None,
                 quote_from: Sequence[str] | None = None, json_schema: dict | None = None, **overrides) -> str:
        """The next assistant turn of `conversation`, as `GMSA.generate_chat([conversation], ...)[0]` gives it;
        `quote_from`: texts the reply must quote (`gmsa.decode.extractive`); `json_schema`: the JSON schema it
        must follow (`gmsa.decode.structured`)."""
        return self.submit(conversation, settings, quote_from, json_schema, **overrides).result()

    def submit(self, conversation: Sequence[ChatMessage], settings: GenerationSettings | None = None,
               quote_from: Sequence[str] | None = None, json_schema: dict | None = None, **overrides) -> Future:
        """Like `generate`, without waiting: a Future of the reply (async code awaits `asyncio.wrap_future(it)`,
        holding no thread while the decoder works)."""
        request = _Request(conversation, self.model.generation_settings(settings, overrides), quote_from,
                           json_schema)
        with self._ready:
            self._queue.append(request)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="gmsa-batcher", daemon=True)
                self._worker.start()
            self._ready.notify()
        return request.reply

    def _work(self) -> None:
        while True:
            with self._ready:
                if not self._ready.wait_for(lambda: self._queue, timeout=60):
                    self._worker = None  # idle: a later request starts a new worker
                    return
            deadline = time.monotonic() + self.window
            with self._ready:
                self._ready.wait_for(lambda: len(self._queue) >= self.max_batch, timeout=deadline - time.monotonic())
                taken, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch:]
            groups: dict[tuple, list[_Request]] = {}
            for request in taken:
                groups.setdefault(request.group(), []).append(request)
            for requests in groups.values():
                self._run(requests)

    def _run(self, requests: list[_Request]) -> None:
        quoting, structured = requests[0].quote_from is not None, requests[0].json_schema is not None
        try:
            self.batch_sizes.append(len(requests))
            if len(self.batch_sizes) > 10_000:
                del self.batch_sizes[:5_000]
            replies = self.model.generate_chat([r.conversation for r in requests], requests[0].settings,
                                               [r.quote_from for r in requests] if quoting else None,
                                               [r.json_schema for r in requests] if structured else None)
        except BaseException as error:  # noqa: BLE001 - handed to the callers, never lost in this thread
            if len(requests) > 1:
                for request in requests:  # find the request at fault; the others still get their replies
                    self._run([request])
            else:
                requests[0].reply.set_exception(error)
            return
        for request, reply in zip(requests, replies):
            request.reply.set_result(reply)
