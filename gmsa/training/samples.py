"""Training samples: token ids of the contexts, the instruction, and the target the decoder must produce."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from gmsa.config import GMSAConfig
from gmsa.data import keep_documents, read_qa, read_texts
from gmsa.similarity import most_relevant

logger = logging.getLogger(__name__)


@dataclass
class Sample:
    """contexts: token ids of each context (compressed each on its own, in order); target: ids to predict."""

    contexts: list[list[int]]
    instruction: str
    target: list[int]
    answers: list[str]
    preamble: str = ""  # text before the contexts (PromptFormat.question_preamble)


def ae_samples(
    paths: list[str], tokenizer: PreTrainedTokenizerBase, config: GMSAConfig, max_tokens: int
) -> list[Sample]:
    """Autoencoder samples: restate the (start of the) text from its soft tokens, each distinct text once."""
    # QA files repeat a passage across questions (nq_train: 33k contexts, 2k distinct); copies would
    # weight passages unevenly and put copies of training texts in the held-out slice
    texts = list(dict.fromkeys(text for path in paths for text in read_texts(Path(path))))
    samples = []
    for ids in tokenizer(texts, add_special_tokens=False).input_ids:
        ids = ids[:max_tokens]
        if ids:
            samples.append(Sample([ids], config.prompt.restate_instruction, ids + [tokenizer.eos_token_id], []))
    return samples


def restate_samples(samples: list[Sample], instruction: str, eos_id: int, max_tokens: int) -> list[Sample]:
    """AE samples from the documents of QA samples: each distinct document once, cut to `max_tokens`."""
    documents = dict.fromkeys(tuple(ids[:max_tokens]) for sample in samples for ids in sample.contexts if ids)
    return [Sample([list(ids)], instruction, [*ids, eos_id], []) for ids in documents]


def qa_samples(
    paths: list[str], tokenizer: PreTrainedTokenizerBase, config: GMSAConfig, max_documents: int,
    max_answer_tokens: int, rerank: int | None = None, rerank_order: str = "last", rank_device: str | None = None,
) -> list[Sample]:
    """KEFT samples: answer the question from the documents; the target is the first reference answer.
    With `rerank`, only the `rerank` documents most similar to the question (MiniLM) are kept, the most relevant
    `rerank_order` ("last": next to the question): what `gmsa-eval qa --rerank` hands the decoder. MiniLM runs on
    `rank_device` (None: the CPU)."""
    samples = []
    for path in paths:
        examples = [e for e in read_qa(Path(path)) if e.answers]
        documents = [keep_documents(e, max_documents) for e in examples]
        if rerank is not None:
            logger.info("ranking the documents of %d questions in %s (MiniLM)", len(examples), path)
            documents = most_relevant([e.question for e in examples], documents, rerank, rank_device,
                                      order=rerank_order, progress=True)
        for example, kept in zip(examples, documents):
            contexts = tokenizer(kept, add_special_tokens=False).input_ids if kept else []
            answer = tokenizer(example.answers[0], add_special_tokens=False).input_ids[:max_answer_tokens]
            instruction = config.prompt.question_template.format(question=example.question)
            preamble = config.prompt.question_preamble.format(question=example.question)
            samples.append(Sample(contexts, instruction, answer + [tokenizer.eos_token_id], example.answers, preamble))
    return samples
