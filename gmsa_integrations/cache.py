"""The soft-token cache shared by the LangChain and LlamaIndex integrations.

Entries are keyed by sha256(compressor fingerprint, rate, text): a lookup can only return soft
tokens computed from exactly that text by exactly that compressor. Memory holds a bounded LRU;
an optional directory keeps entries across processes as safetensors files, written to a
temporary name and renamed into place, so concurrent readers see a whole file or none. A file
read back must carry its key and the digest of its tensor, hold finite numbers, and have the
shape the caller expects; one that fails is ignored with one warning, and recomputed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from gmsa.errors import ConfigError, GMSAError
from gmsa.integrity import DIGEST_KEY, digest_problem, tensor_digest

logger = logging.getLogger(__name__)

STALE_SECONDS = 600
"""A temporary file this old belongs to a killed write (live writes take milliseconds), and is removed."""
ENTRY = re.compile(r"[0-9a-f]{64}\.safetensors")
TEMPORARY = re.compile(r"\.[0-9a-f]{16}-.+\.tmp")
"""The only names the cache writes (an entry, a temporary file): nothing else in its folder is ever removed."""


def cache_key(fingerprint: str, rate: int, text: str) -> str:
    return hashlib.sha256(f"{fingerprint}\0{rate}\0{text}".encode()).hexdigest()


class SoftTokenCache:
    """Soft tokens by (compressor fingerprint, rate, text); thread-safe.

    max_bytes: memory budget of the in-memory LRU (least recently used entries go first).
    directory: optional on-disk cache, shared by processes that point at the same folder.
    """

    def __init__(self, max_bytes: int = 256 * 2**20, directory: str | Path | None = None) -> None:
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 0:
            raise ConfigError(f"max_bytes={max_bytes!r} is invalid: an integer >= 0")
        self.max_bytes = max_bytes
        self.directory = Path(directory) if directory is not None else None
        self._entries: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        self.hits = self.misses = 0
        if self.directory is not None:
            self._prepare_directory()

    def _prepare_directory(self) -> None:
        """The folder must be writable (checked now, not at the first write); killed writes' files go."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.directory):
                pass
        except OSError as error:
            raise GMSAError(f"soft-token cache folder {self.directory} cannot be written ({error.strerror}): "
                            "give a writable folder, or none (memory only)") from None
        now = time.time()
        for leftover in self._own(TEMPORARY):
            try:
                if now - leftover.stat().st_mtime > STALE_SECONDS:
                    leftover.unlink()
            except OSError:
                pass

    def _own(self, pattern: re.Pattern) -> list[Path]:
        """The files in the cache folder the cache wrote, by their names (a shared folder keeps the rest)."""
        return [path for path in self.directory.iterdir() if pattern.fullmatch(path.name) and not path.is_dir()]

    def __getstate__(self) -> dict:
        """A pickled cache keeps its settings, not its entries or lock (a copy in another process starts empty and
        reads the same folder)."""
        return {"max_bytes": self.max_bytes, "directory": self.directory}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["max_bytes"], state["directory"])

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, fingerprint: str, rate: int, text: str, shape: tuple[int, int] | None = None) -> torch.Tensor | None:
        """The soft tokens of (fingerprint, rate, text), or None; `shape`: what they must be, (ceil(n/r), H)."""
        key = cache_key(fingerprint, rate, text)
        with self._lock:
            soft = self._entries.get(key)
            if soft is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return soft
        soft = self._read(key, shape)
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
            for file in self._own(ENTRY) + self._own(TEMPORARY):
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

    def _read(self, key: str, shape: tuple[int, int] | None) -> torch.Tensor | None:
        if self.directory is None or not self._path(key).is_file():
            return None
        try:
            with safe_open(self._path(key), framework="pt") as handle:
                metadata = handle.metadata() or {}
                soft = handle.get_tensor("soft_tokens")
            problem = (("its recorded key does not match its name" if metadata.get("key") != key else None)
                       or digest_problem({"soft_tokens": soft}, metadata)
                       or ("it holds NaN or Inf" if not bool(soft.isfinite().all()) else None)
                       or (f"its shape {tuple(soft.shape)} is not {shape}" if shape and soft.shape != shape else None))
        except (SafetensorError, OSError, ValueError) as error:
            problem = f"it cannot be read ({error})"
        if problem is None:
            return soft
        if key not in self._warned:
            self._warned.add(key)
            logger.warning("soft-token cache file %s is ignored and recomputed: %s", self._path(key), problem)
        return None

    def _write(self, key: str, soft: torch.Tensor) -> None:
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{key[:16]}-", suffix=".tmp", dir=self.directory)
        os.close(handle)
        try:
            tensors = {"soft_tokens": soft.contiguous().cpu()}
            save_file(tensors, temporary, metadata={"key": key, DIGEST_KEY: tensor_digest(tensors)})
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
