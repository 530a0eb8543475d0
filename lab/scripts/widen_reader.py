"""Widen a checkpoint's LoRA decoder adapter to a full-rank one (`keft_mode="full"`), same function.

The issue's KEFT has two readers: LoRA on W_Q, W_K, W_V (the shipped default, rank 64) and a
full-rank update (the paper's W_Q, W_K, W_V; with every projection as `--targets`, the reference
code's whole decoder, norms and embeddings aside). To measure the reader alone, KEFT must continue
from the same function with only the reader changed. A rank-r update B @ A (B: out x r, A: r x in)
equals [B, 0] @ [A; A_new] for any A_new, and a new target's update starts at B = 0, so the widened
checkpoint starts from exactly the old reader. A_new keeps peft's LoRA initialisation, so the new
directions train from the first step (zero rows of A would get no gradient).

    python lab/scripts/widen_reader.py --checkpoint gmsa/checkpoints/default --out runs/default-full-reader
    gmsa-train keft --config recipes/default-keft-nq.yaml --from runs/default-full-reader model.keft_mode=full ...

The script checks that both give the same next-token logits on one prompt before it writes `--out`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

import torch

from gmsa import GMSA
from gmsa.backbone.adapters import decoder_adapter, use_adapter
from gmsa.checkpoint import read_checkpoint
from gmsa.errors import CheckpointError, GMSAError

logger = logging.getLogger("widen_reader")
CHECK_TEXT = "The Eiffel Tower was completed in 1889 for the World's Fair in Paris, France."
CHECK_QUESTION = "When was the Eiffel Tower completed?"


@torch.no_grad()
def widened(checkpoint: Path, targets: list[str] | None, seed: int, device: str | None = None,
            dtype: torch.dtype = torch.float32) -> GMSA:
    """A GMSA with a full-rank reader on `targets` (default: the checkpoint's), computing what `checkpoint` does."""
    config, identity, tensors = read_checkpoint(checkpoint)
    if config.keft_mode != "lora":
        raise CheckpointError(f"{checkpoint} has keft_mode={config.keft_mode!r}: only a 'lora' reader widens")
    targets = targets or list(config.keft_targets)
    if missing := sorted(set(config.keft_targets) - set(targets)):
        raise CheckpointError(f"--targets must keep the checkpoint's keft_targets; {missing} are missing")
    torch.manual_seed(seed)  # peft's initialisation of the new rows of A
    model = GMSA.from_base(config.base_model, dataclasses.replace(config, keft_mode="full", keft_targets=targets),
                           device=device, dtype=dtype)
    if model.base_fingerprint != identity.get("fingerprint"):
        raise CheckpointError(f"{checkpoint} was trained on another base model than {config.base_model!r}")
    params, scale = model.trained_parameters(), config.keft_lora_alpha / config.keft_lora_rank
    # peft adapts whichever targets it finds and ignores the rest: a misspelt one would be recorded, never trained
    if absent := [t for t in targets if not any(f".{t}.lora_A." in n for n in params if n.startswith("decoder."))]:
        raise GMSAError(f"--targets {' '.join(absent)}: no such projection in the layers of {config.base_model!r}")
    if unknown := sorted(set(tensors) - set(params)):
        raise CheckpointError(f"{checkpoint}: {len(unknown)} tensors have no place in the widened model, "
                              f"e.g. {unknown[:3]}")
    for name, tensor in tensors.items():
        param, old = params[name], tensor.to(torch.float32)
        if ".lora_A." in name and name.startswith("decoder."):
            param[: old.shape[0]] = old * scale  # (r, in) into (H, in); the old scale moves into A (full: scale 1)
        elif ".lora_B." in name and name.startswith("decoder."):
            param.zero_()
            param[:, : old.shape[1]] = old  # (out, r) into (out, H), the rest zero
        else:
            param.copy_(old)  # encoder LoRA, LSA, slot maps: as trained
    return model


@torch.no_grad()
def next_token_logits(model: GMSA) -> torch.Tensor:
    """Logits of the first answer token for one compressed document and question: (V,)."""
    soft = model.compress([CHECK_TEXT], rate=model.config.rates[0])  # [(m, H)]
    embeds, mask, positions = model.decoder_inputs(model.question_conversations([CHECK_QUESTION], [soft]))
    with use_adapter(model.base, decoder_adapter(model.base)):
        logits = model.base(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits  # (1, T, V)
    return logits[0, -1].float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("gmsa/checkpoints/default"))
    parser.add_argument("--out", type=Path, required=True, help="a new folder (an existing one is not overwritten)")
    parser.add_argument("--targets", nargs="+", help="decoder projections of the full-rank reader "
                        "(default: the checkpoint's keft_targets; new ones start as a zero update)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the new rows of A")
    parser.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.out.exists():  # it may be the checkpoint itself, or another one: widening must not replace either
        parser.exit(2, f"widen_reader.py: error: --out {args.out} exists; remove it or choose another folder\n")

    try:
        model = widened(args.checkpoint, args.targets, args.seed, args.device)
        reference = GMSA.from_pretrained(args.checkpoint, device=args.device, dtype=torch.float32)
    except GMSAError as error:
        parser.exit(2, f"widen_reader.py: error: {error}\n")
    gap = (next_token_logits(model) - next_token_logits(reference)).abs().max().item()
    if gap > 1e-3:  # checked before writing, so a wrong widening leaves nothing behind
        parser.exit(1, f"widen_reader.py: error: the widened reader differs from {args.checkpoint} by {gap:.2e} "
                       "in logits; nothing was written\n")
    model.save_pretrained(args.out)
    logger.info("widened %s -> %s; max logit difference on a check prompt: %.2e", args.checkpoint, args.out, gap)

if __name__ == "__main__":
    main()
