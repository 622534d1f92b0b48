"""A pool of pre-generated RSA keys for virtual devices.

Generating an RSA 2048 key costs tens of milliseconds of CPU. A fleet of a thousand virtual iPhones
would spend most of its time doing that, and the simulator, not the server, would be what a load test
measures. So keys are generated once, kept in a PEM file, and handed out from memory.

THE KEYS IN THE POOL FILE ARE TEST KEYS ONLY. They are stored as unencrypted PKCS#8 PEM in a cache
directory, readable by anyone who can read that directory. Never use them for anything but virtual
devices.

The default file is ``$XDG_CACHE_HOME/pomona/keypool-rsa2048.pem`` (``~/.cache/pomona/...`` when
``XDG_CACHE_HOME`` is unset). ``KeyPool.take()`` hands each key out once per pool; when the pool runs
dry it generates fresh keys in memory, so a caller never fails, it just gets slower.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = ["KeyPool", "ProgressCallback", "default_pool", "default_pool_path", "generate_key"]

#: ``progress(done, total)`` is called after each generated key.
ProgressCallback = Callable[[int, int], None]

_PEM_BEGIN = b"-----BEGIN PRIVATE KEY-----"
_PEM_END = b"-----END PRIVATE KEY-----"
DEFAULT_KEY_SIZE = 2048


def default_pool_path(key_size: int = DEFAULT_KEY_SIZE) -> Path:
    """Where the shared pool file lives: under ``$XDG_CACHE_HOME`` or ``~/.cache``."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "pomona" / f"keypool-rsa{key_size}.pem"


def generate_key(key_size: int = DEFAULT_KEY_SIZE) -> rsa.RSAPrivateKey:
    """One fresh RSA key with the public exponent every Apple device uses."""
    return rsa.generate_private_key(public_exponent=65537, key_size=key_size)


def _generate_many(count: int, key_size: int, progress: ProgressCallback | None) -> list[rsa.RSAPrivateKey]:
    """Generate ``count`` keys on a few threads (OpenSSL releases the GIL for part of the work)."""
    if count <= 0:
        return []
    keys: list[rsa.RSAPrivateKey] = []
    workers = max(1, min(count, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pomona-keygen") as pool:
        for key in pool.map(lambda _: generate_key(key_size), range(count)):
            keys.append(key)
            if progress is not None:
                progress(len(keys), count)
    return keys


def _to_pem(key: rsa.RSAPrivateKey) -> bytes:
    # Unencrypted on purpose: these are test keys (see the module docstring).
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _split_pem(data: bytes) -> list[bytes]:
    blocks: list[bytes] = []
    start = data.find(_PEM_BEGIN)
    while start != -1:
        end = data.find(_PEM_END, start)
        if end == -1:
            break
        end += len(_PEM_END)
        blocks.append(data[start:end] + b"\n")
        start = data.find(_PEM_BEGIN, end)
    return blocks


def _load_pem(block: bytes, key_size: int) -> rsa.RSAPrivateKey | None:
    try:
        # Our own keys, written by this module: skipping the (slow) RSA consistency check is safe.
        key = serialization.load_pem_private_key(block, password=None, unsafe_skip_rsa_key_validation=True)
    except (ValueError, TypeError):
        return None
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size != key_size:
        return None
    return key


def _write_atomically(path: Path, blocks: Iterable[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            for block in blocks:
                handle.write(block)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class KeyPool:
    """Pre-generated RSA keys, handed out once each, safe to share between threads."""

    def __init__(
        self, keys: Iterable[rsa.RSAPrivateKey], *, path: Path | None = None, key_size: int = DEFAULT_KEY_SIZE
    ) -> None:
        self._keys = list(keys)
        self._next = 0
        self._lock = threading.Lock()
        self.path = path
        self.key_size = key_size

    @classmethod
    def load_or_create(
        cls,
        path: Path | None = None,
        size: int = 16,
        progress: ProgressCallback | None = None,
        *,
        key_size: int = DEFAULT_KEY_SIZE,
    ) -> KeyPool:
        """Load at least ``size`` keys from ``path``, generating and appending the missing ones.

        ``path=None`` means the default cache file. Unreadable blocks and keys of another size are
        dropped (and the file rewritten without them). ``progress(done, total)`` reports generation.
        """
        path = path if path is not None else default_pool_path(key_size)
        blocks = _split_pem(path.read_bytes()) if path.exists() else []
        keys: list[rsa.RSAPrivateKey] = []
        good_blocks: list[bytes] = []
        for block in blocks:
            key = _load_pem(block, key_size)
            if key is not None:
                keys.append(key)
                good_blocks.append(block)
        missing = max(0, size - len(keys))
        new_keys = _generate_many(missing, key_size, progress)
        if new_keys or len(good_blocks) != len(blocks):
            keys.extend(new_keys)
            _write_atomically(path, good_blocks + [_to_pem(k) for k in new_keys])
        return cls(keys, path=path, key_size=key_size)

    @classmethod
    def in_memory(
        cls, size: int, progress: ProgressCallback | None = None, *, key_size: int = DEFAULT_KEY_SIZE
    ) -> KeyPool:
        """A pool that never touches the disk."""
        return cls(_generate_many(size, key_size, progress), key_size=key_size)

    def take(self) -> rsa.RSAPrivateKey:
        """The next unused key; a freshly generated one once the pool has run dry."""
        with self._lock:
            if self._next < len(self._keys):
                key = self._keys[self._next]
                self._next += 1
                return key
        return generate_key(self.key_size)

    @property
    def remaining(self) -> int:
        """How many pre-generated keys have not been handed out yet."""
        with self._lock:
            return len(self._keys) - self._next

    def __len__(self) -> int:
        return len(self._keys)


_default_pool: KeyPool | None = None
_default_lock = threading.Lock()


def default_pool(size: int = 32) -> KeyPool:
    """The process-wide pool used by devices created without a key (the file cache if writable)."""
    global _default_pool
    with _default_lock:
        if _default_pool is None:
            try:
                _default_pool = KeyPool.load_or_create(None, size)
            except OSError:
                _default_pool = KeyPool.in_memory(0)
        return _default_pool
