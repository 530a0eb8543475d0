"""Widen a checkpoint's LoRA decoder adapter to the full-rank one (`keft_mode="full"`), same function.

The issue's KEFT has two readers: LoRA on W_Q, W_K, W_V (the shipped default, rank 64) and a
full-rank update of the same matrices (the paper's). To measure the rank alone, KEFT must continue
from the same function with only the rank changed. A rank-r update B @ A (B: out x r, A: r x in)
equals [B, 0] @ [A; A_new] for any A_new, so the widened adapter starts from exactly the shipped
reader. A_new gets peft's LoRA initialisation (its B columns are zero), so the new directions train
from the first step (zero rows of A would get no gradient).

    python benchmarks/widen_reader.py --checkpoint gmsa/checkpoints/default --out runs/default-full-reader
    gmsa-train keft --config recipes/default-keft-nq.yaml --from runs/default-full-reader model.keft_mode=full ...

The script checks that both checkpoints give the same next-token logits on one prompt.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
from pathlib import Path

import torch
from torch import nn

from gmsa import GMSA
from gmsa.checkpoint import read_checkpoint, write_checkpoint
from gmsa.decoding import activate_decoder
from gmsa.errors import CheckpointError

logger = logging.getLogger("widen_reader")
CHECK_TEXT = "The Eiffel Tower was completed in 1889 for the World's Fair in Paris, France."
CHECK_QUESTION = "When was the Eiffel Tower completed?"


def widen(tensors: dict[str, torch.Tensor], scale: float, hidden_size: int, seed: int) -> dict[str, torch.Tensor]:
    """Decoder LoRA pairs of rank r with update scale `scale` -> pairs of rank `hidden_size` and scale 1."""
    generator = torch.Generator().manual_seed(seed)
    widened = dict(tensors)
    for name_a in sorted(n for n in tensors if n.startswith("decoder.") and ".lora_A." in n):
        name_b = name_a.replace(".lora_A.", ".lora_B.")
        a, b = tensors[name_a].float(), tensors[name_b].float()  # (r, in), (out, r)
        rank, fan_in = a.shape
        if rank > hidden_size:
            raise CheckpointError(f"{name_a}: rank {rank} is already above the hidden size {hidden_size}")
        new_a = torch.empty(hidden_size - rank, fan_in)
        nn.init.kaiming_uniform_(new_a, a=math.sqrt(5), generator=generator)  # peft's lora_A initialisation
        widened[name_a] = torch.cat([a * scale, new_a])  # (r, in) -> (H, in); the old scale moves into A
        widened[name_b] = torch.cat([b, b.new_zeros(b.shape[0], hidden_size - rank)], dim=1)  # (out, r) -> (out, H)
    return widened


@torch.no_grad()
def next_token_logits(model: GMSA) -> torch.Tensor:
    """Logits of the first answer token for one compressed document and question: (V,)."""
    soft = model.compress([CHECK_TEXT], rate=model.config.rates[0])  # [(m, H)]
    embeds, mask, positions = model.decoder_inputs(model.question_conversations([CHECK_QUESTION], [soft]))
    activate_decoder(model.base)
    logits = model.base(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits  # (1, T, V)
    return logits[0, -1].float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("gmsa/checkpoints/default"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0, help="seed of the new rows of A")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    config, identity, tensors = read_checkpoint(args.checkpoint)
    if config.keft_mode != "lora":
        raise CheckpointError(f"{args.checkpoint} has keft_mode={config.keft_mode!r}: only a 'lora' reader widens")
    original = GMSA.from_pretrained(args.checkpoint, dtype=torch.float32)
    hidden_size = original.hidden_size
    widened = widen(tensors, config.keft_lora_alpha / config.keft_lora_rank, hidden_size, args.seed)
    full_config = dataclasses.replace(config, keft_mode="full")
    write_checkpoint(args.out, full_config, identity, widened)

    reference = next_token_logits(original)
    del original
    logits = next_token_logits(GMSA.from_pretrained(args.out, dtype=torch.float32))
    gap = (logits - reference).abs().max().item()
    logger.info("widened %s -> %s (rank %d); max logit difference on a check prompt: %.2e",
                args.checkpoint, args.out, hidden_size, gap)
    if gap > 1e-3:
        raise SystemExit(f"the widened reader differs from {args.checkpoint} by {gap:.2e} in logits")


if __name__ == "__main__":
    main()
