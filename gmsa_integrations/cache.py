"""The soft-token cache shared by the LangChain and LlamaIndex integrations.

Entries are keyed by sha256(compressor fingerprint, rate, text): a lookup can only return soft
tokens computed from exactly that text by exactly that compressor. Memory holds a bounded LRU;
an optional directory keeps entries across processes as safetensors files, written to a
temporary name and renamed into place, so concurrent readers see a whole file or none.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

logger = logging.getLogger(__name__)


def cache_key(fingerprint: str, rate: int, text: str) -> str:
    return hashlib.sha256(f"{fingerprint}\0{rate}\0{text}".encode()).hexdigest()


class SoftTokenCache:
    """Soft tokens by (compressor fingerprint, rate, text); thread-safe.

    max_bytes: memory budget of the in-memory LRU (least recently used entries go first).
    directory: optional on-disk cache, shared by processes that point at the same folder.
    """

    def __init__(self, max_bytes: int = 256 * 2**20, directory: str | Path | None = None) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes={max_bytes!r} is invalid: >= 0")
        self.max_bytes = max_bytes
        self.directory = Path(directory) if directory is not None else None
        self._entries: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, fingerprint: str, rate: int, text: str) -> torch.Tensor | None:
        key = cache_key(fingerprint, rate, text)
        with self._lock:
            soft = self._entries.get(key)
            if soft is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return soft
        soft = self._read(key)
        with self._lock:
            if soft is None:
                self.misses += 1
                return None
            self.hits += 1
        self._remember(key, soft)
        return soft

    def put(self, fingerprint: str, rate: int, text: str, soft: torch.Tensor) -> None:
        key = cache_key(fingerprint, rate, text)
        soft = soft.detach()
        self._remember(key, soft)
        self._write(key, soft)

    def clear(self, disk: bool = False) -> None:
        """Forget the in-memory entries (and the on-disk ones with disk=True)."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0
        if disk and self.directory is not None:
            for file in self.directory.glob("*.safetensors"):
                file.unlink(missing_ok=True)

    def _remember(self, key: str, soft: torch.Tensor) -> None:
        size = soft.numel() * soft.element_size()
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return
            self._entries[key] = soft
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.numel() * evicted.element_size()

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.safetensors"

    def _read(self, key: str) -> torch.Tensor | None:
        if self.directory is None or not self._path(key).is_file():
            return None
        try:
            with safe_open(self._path(key), framework="pt") as handle:
                if (handle.metadata() or {}).get("key") != key:
                    raise ValueError("its recorded key does not match its name")
                return handle.get_tensor("soft_tokens")
        except (SafetensorError, OSError, ValueError) as error:
            logger.warning("ignoring unreadable soft-token cache file %s: %s", self._path(key), error)
            return None

    def _write(self, key: str, soft: torch.Tensor) -> None:
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{key[:16]}-", suffix=".tmp", dir=self.directory)
        os.close(handle)
        try:
            save_file({"soft_tokens": soft.contiguous().cpu()}, temporary, metadata={"key": key})
            os.replace(temporary, self._path(key))  # atomic: readers never see half a file
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)


_default_cache: SoftTokenCache | None = None
_default_lock = threading.Lock()


def default_cache() -> SoftTokenCache:
    """The process-wide in-memory cache both integrations use unless given another."""
    global _default_cache
    with _default_lock:
        if _default_cache is None:
            _default_cache = SoftTokenCache()
        return _default_cache
