"""Compress at ingest: a corpus's soft tokens at every trained rate, in a folder of sharded safetensors.

A store belongs to one compressor (its fingerprint, `GMSA.compressor_fingerprint`) and holds each distinct text
once per rate, keyed by the text's sha256: a lookup returns soft tokens only for exactly that text, compressed by
exactly that compressor. Soft tokens are kept in half precision (bf16 by default: 2 bytes a value) and cast to
the model's dtype on read.

    store/
      store.json                      fingerprint, rates, dtype, hidden size (written first, checked by every writer)
      shard-r0-000000.safetensors     tensors "<sha256 of text>@<rate>" -> (ceil(n/rate), H), with a digest

`ingest` compresses the texts the store lacks, longest first in length-sorted batches, and writes one shard
per `shard_texts` texts (a temporary name renamed into place: a killed run loses at most the shard it was
writing, and a rerun skips every text already stored). Under torchrun or `accelerate launch` each process takes
its share of the texts (RANK, WORLD_SIZE) and writes its own shards; no process waits on another.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from gmsa.compress.compressor import Parts, compressor_fingerprint, soft_tokens_at_rates, tokenize_contexts
from gmsa.errors import ConfigError, GMSAError
from gmsa.integrity import DIGEST_KEY, digest_problem, tensor_digest

logger = logging.getLogger(__name__)

MANIFEST = "store.json"
SHARD = re.compile(r"shard-r(\d+)-(\d{6})\.safetensors")
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def text_key(text: str, rate: int) -> str:
    return f"{hashlib.sha256(text.encode()).hexdigest()}@{rate}"


class SoftTokenStore:
    """Read access to a store folder (and what `ingest` writes into it). Shard headers are read once; tensors
    are read from their shard when asked for (safetensors maps the file, nothing else is loaded)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / MANIFEST).is_file():
            raise GMSAError(f"{self.path} is not a soft-token store (no {MANIFEST}): build one with gmsa index")
        self.manifest = _read_manifest(self.path / MANIFEST)
        self.fingerprint, self.rates = self.manifest["fingerprint"], list(self.manifest["rates"])
        self._where: dict[str, Path] = {}
        self._warned = False
        for shard in sorted(p for p in self.path.iterdir() if SHARD.fullmatch(p.name)):
            try:
                with safe_open(shard, framework="pt") as handle:
                    self._where.update(dict.fromkeys(handle.keys(), shard))
            except (SafetensorError, OSError) as error:
                raise GMSAError(f"{shard} cannot be read ({error}): delete it and run gmsa index again, which "
                                "compresses its texts anew (nothing else is lost)") from None

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def get(self, fingerprint: str, rate: int, text: str, shape: tuple[int, int] | None = None) -> torch.Tensor | None:
        """The stored soft tokens of `text` at `rate`, or None (another compressor, another text, not stored)."""
        key = text_key(text, rate)
        if fingerprint != self.fingerprint:
            if not self._warned:
                self._warned = True
                logger.warning("soft-token store %s was built by another compressor or base dtype than the model "
                               "reading it: it is not used (rebuild it with gmsa index and this model)", self.path)
            return None
        if key not in self._where:
            return None
        with safe_open(self._where[key], framework="pt") as handle:
            soft = handle.get_tensor(key)
        if shape is not None and tuple(soft.shape) != tuple(shape):  # e.g. another tokenizer: recomputed
            logger.warning("soft-token store %s: %s has shape %s, not %s; it is ignored and recomputed",
                           self._where[key].name, key, tuple(soft.shape), tuple(shape))
            return None
        return soft


def _read_manifest(path: Path) -> dict:
    """A store's manifest; damaged or incomplete, a GMSAError naming it."""
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise GMSAError(f"{path} is damaged ({error}): rebuild the store with gmsa index into a new folder") from None
    missing = [k for k in ("fingerprint", "rates", "dtype", "hidden_size") if not isinstance(manifest, dict)
               or k not in manifest]
    if missing:
        raise GMSAError(f"{path} lacks {', '.join(missing)}: it was not written by gmsa index")
    return manifest


def _open_store(path: Path, model: Parts, dtype: str) -> SoftTokenStore:
    """The store at `path`, created for `model` when the folder is new or empty; a store of another compressor
    or dtype is refused (it would mix soft tokens)."""
    wanted = {"format": 1, "fingerprint": compressor_fingerprint(model), "rates": list(model.config.rates),
              "dtype": dtype, "hidden_size": model.hidden_size, "base_model": model.config.base_model}
    manifest = path / MANIFEST
    if manifest.is_file():
        found = _read_manifest(manifest)
        differ = [k for k in ("fingerprint", "rates", "dtype", "hidden_size") if found.get(k) != wanted[k]]
        if differ:
            raise GMSAError(f"{path} holds a store of another compressor or layout ({', '.join(differ)} differ): "
                            "give another folder")
    else:
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise GMSAError(f"{path} exists and is not an empty folder or a soft-token store: nothing was written")
        path.mkdir(parents=True, exist_ok=True)
        temporary = path / f".{MANIFEST}.{os.getpid()}.tmp"
        temporary.write_text(json.dumps(wanted, indent=1) + "\n", encoding="utf-8")
        os.replace(temporary, manifest)  # every process writes the same content; the last rename wins
    return SoftTokenStore(path)


def _write_shard(path: Path, tensors: dict[str, torch.Tensor], fingerprint: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(temporary), metadata={"fingerprint": fingerprint, DIGEST_KEY: tensor_digest(tensors)})
    os.replace(temporary, path)


def ingest(model: Parts, documents: Iterable[object], path: str | Path, *, dtype: str = "bfloat16",
           shard_texts: int = 512, rank: int | None = None, world_size: int | None = None,
           progress: bool = True) -> SoftTokenStore:
    """Compress every document the store at `path` lacks, at every rate of `model`, into new shards; returns the
    store. Documents are texts, LangChain Documents or LlamaIndex nodes (`texts_of`).

        store = ingest(GMSA.from_pretrained(), vector_store_documents, "corpus.gmsa")
        GMSACompressor(store="corpus.gmsa"), ChatGMSA(store="corpus.gmsa")   # read it, never encode these texts

    rank / world_size: this process's share (default: the RANK and WORLD_SIZE that torchrun and accelerate set).
    """
    if dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype!r} is invalid: one of {', '.join(DTYPES)}")
    if not isinstance(shard_texts, int) or shard_texts < 1:
        raise ConfigError(f"shard_texts={shard_texts!r} is invalid: an integer >= 1")
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    path = Path(path)
    store = _open_store(path, model, dtype)
    for leftover in path.glob(f".shard-r{rank}-*.safetensors.tmp"):  # what a killed run of this rank was writing
        leftover.unlink()
    rates = list(model.config.rates)
    if isinstance(documents, (str, bytes)):
        raise ConfigError("documents must be a list of texts, Documents or nodes, not one string (wrap it in a list)")
    distinct = [t for t in dict.fromkeys(texts_of(list(documents))) if t.strip()]
    mine = [t for i, t in enumerate(distinct) if i % world_size == rank]
    todo = [t for t in mine if not all(text_key(t, r) in store for r in rates)]
    written = [int(m.group(2)) for p in path.iterdir() if (m := SHARD.fullmatch(p.name)) and int(m.group(1)) == rank]
    number = max(written, default=-1) + 1
    lengths = dict(zip(todo, map(len, tokenize_contexts(model.tokenizer, todo))))
    todo.sort(key=lambda t: -lengths[t])  # length-sorted: neighbours share a padded batch
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), unit="text", desc=f"gmsa index (rank {rank})",
               disable=not progress)
    for start in range(0, len(todo), shard_texts):
        chunk = todo[start: start + shard_texts]
        tensors: dict[str, torch.Tensor] = {}
        for offset in range(0, len(chunk), 64):
            part = chunk[offset: offset + 64]
            with model.lock, torch.no_grad():
                soft = soft_tokens_at_rates(model, tokenize_contexts(model.tokenizer, part), [rates] * len(part))
            for text, by_rate in zip(part, soft):
                for rate, tokens in by_rate.items():
                    tensors[text_key(text, rate)] = tokens.to(DTYPES[dtype]).cpu().contiguous()  # (m, H)
            bar.update(len(part))
        _write_shard(path / f"shard-r{rank}-{number:06d}.safetensors", tensors, store.fingerprint)
        number += 1
    bar.close()
    return SoftTokenStore(path)


def check_shard(path: Path) -> str | None:
    """What is wrong with a shard file (its tensors against their digest, NaN or Inf), or None."""
    with safe_open(path, framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        metadata = handle.metadata() or {}
    broken = [key for key, soft in tensors.items() if not bool(soft.float().isfinite().all())]
    return digest_problem(tensors, metadata) or (f"NaN or Inf in {len(broken)} entries" if broken else None)


def texts_of(documents: Sequence[object]) -> list[str]:
    """The texts GMSA compresses of strings, LangChain Documents (page_content) or LlamaIndex nodes (their content
    without metadata, as `GMSANodePostprocessor` compresses it)."""
    texts = []
    for index, document in enumerate(documents):
        if isinstance(document, str):
            texts.append(document)
        elif hasattr(document, "page_content"):
            texts.append(document.page_content)
        elif hasattr(document, "get_content"):
            from llama_index.core.schema import MetadataMode

            texts.append(document.get_content(metadata_mode=MetadataMode.NONE))
        else:
            raise ConfigError(f"documents[{index}] is {type(document).__name__}: give texts, LangChain Documents "
                              "or LlamaIndex nodes")
    return texts
