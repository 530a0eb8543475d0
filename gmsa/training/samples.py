"""Training samples: token ids of the contexts, the instruction, and the target the decoder must produce."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from gmsa.config import GMSAConfig
from gmsa.data import keep_documents, read_qa, read_texts


@dataclass
class Sample:
    """contexts: token ids of each context (compressed each on its own, in order); target: ids to predict."""

    contexts: list[list[int]]
    instruction: str
    target: list[int]
    answers: list[str]
    question: str = ""
    relevance: list[float] | None = None
    """Each context's relevance to the question (MiniLM), where a recipe lays documents out as the planner."""


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


def qa_samples(
    paths: list[str], tokenizer: PreTrainedTokenizerBase, config: GMSAConfig, max_documents: int,
    max_answer_tokens: int, rank: bool = False, rank_device: str | None = None,
) -> list[Sample]:
    """KEFT samples: answer the question from the documents; the target is the first reference answer.
    `rank`: also score each document's relevance to the question with MiniLM (on `rank_device`)."""
    samples, documents = [], []
    for path in paths:
        for example in read_qa(Path(path)):
            if not example.answers:
                continue
            kept = keep_documents(example, max_documents)
            contexts = tokenizer(kept, add_special_tokens=False).input_ids if kept else []
            answer = tokenizer(example.answers[0], add_special_tokens=False).input_ids[:max_answer_tokens]
            instruction = config.prompt.question_template.format(question=example.question)
            samples.append(Sample(contexts, instruction, answer + [tokenizer.eos_token_id], example.answers,
                                  example.question))
            documents.append(kept)
    if rank and samples:
        from gmsa.similarity import relevances

        scores = relevances([s.question for s in samples], documents, rank_device, progress=True)
        for sample, row in zip(samples, scores):
            sample.relevance = row
    return samples
