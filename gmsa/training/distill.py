"""Distillation from a teacher that reads the documents uncompressed (KEFT's `teacher`).

The teacher is a checkpoint over the same base model, typically the fine-tuned uncompressed baseline
(`compression=none`). For each answering sample it reads the same prompt with the documents as text;
the student, reading soft tokens, is pulled towards it in two ways:

- logits: KL(teacher || student) over the answer tokens, so the student learns the teacher's whole
  next-token distribution, not only the reference answer's tokens;
- hidden: every layer's states over the tokens after the last document (the question, the chat
  template's tail and the answer), which both prompts share. Soft tokens that keep what the question
  needs give those positions the states the text gives them. Each hidden dimension is scaled by the
  teacher's spread over the batch, so the few huge, token-independent dimensions of small LMs (|x| ~ 20
  where the median is ~0.7 on SmolLM2) do not drown the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gmsa.errors import ConfigError
from gmsa.model import GMSA
from gmsa.training.objective import IGNORE, DecoderPass, decoder_pass, text_contexts
from gmsa.training.samples import Sample


def load_teacher(path: str, student: GMSA) -> GMSA:
    """The teacher checkpoint on the student's device, frozen; it must share the base model and prompt."""
    teacher = GMSA.from_pretrained(path, base_model=student.config.base_model, device=student.device,
                                   dtype=torch.float32)
    if teacher.base_fingerprint != student.base_fingerprint:
        raise ConfigError(f"teacher={path!r} was trained over another base model than the student "
                          f"({teacher.config.base_model!r}): distillation needs the same base and tokenizer")
    if teacher.config.prompt != student.config.prompt:
        raise ConfigError(f"teacher={path!r} lays out prompts differently from the student "
                          f"(teacher {teacher.config.prompt!r}, student {student.config.prompt!r}): "
                          "the answer positions would not line up")
    teacher.requires_grad_(False)
    teacher.eval()
    return teacher


def logit_kl(student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over target positions of KL(teacher || student).

    Input: student, teacher logits (B, W, V); targets (B, W), IGNORE where there is no target.
    """
    keep = targets != IGNORE  # (B, W)
    log_student = F.log_softmax(student[keep].float(), dim=-1)  # (N, V)
    log_teacher = F.log_softmax(teacher[keep].float(), dim=-1)  # (N, V)
    return F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean")


def hidden_match(student: tuple[torch.Tensor, ...], teacher: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Mean over layers of the squared state difference, each dimension scaled by the teacher's spread.

    Input: layers x (B, S, H) each.
    """
    losses = []
    for own, target in zip(student, teacher, strict=True):
        target = target.float()
        spread = target.reshape(-1, target.shape[-1]).std(dim=0).clamp(min=1e-3)  # (B*S, H) -> (H,)
        losses.append((((own.float() - target) / spread) ** 2).mean())
    return torch.stack(losses).mean()


@dataclass
class Distillation:
    """A frozen teacher and the weights of its two terms in the KEFT loss."""

    teacher: GMSA
    logit_weight: float
    hidden_weight: float

    @torch.no_grad()
    def teacher_pass(self, samples: list[Sample]) -> DecoderPass:
        return decoder_pass(self.teacher, samples, text_contexts(samples), hidden_states=self.hidden_weight > 0)

    def loss(self, samples: list[Sample], student: DecoderPass) -> torch.Tensor:
        """The weighted distillation terms for a batch the student has just read (soft tokens)."""
        teacher = self.teacher_pass(samples)
        if not torch.equal(teacher.targets, student.targets):
            raise RuntimeError("teacher and student targets do not line up: their prompts end differently")
        loss = student.logits.new_zeros((), dtype=torch.float32)
        if self.logit_weight:
            loss = loss + self.logit_weight * logit_kl(student.logits, teacher.logits, student.targets)
        if self.hidden_weight:
            loss = loss + self.hidden_weight * hidden_match(student.hidden, teacher.hidden)
        return loss
