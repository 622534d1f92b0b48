"""The key pool: pre-generated RSA keys for virtual devices, cached in a PEM file."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from pomona.testing.keypool import KeyPool, default_pool_path

# 1024-bit keys keep these tests fast; the pool logic does not depend on the size.
SIZE = 1024


def _numbers(key: rsa.RSAPrivateKey) -> rsa.RSAPublicNumbers:
    return key.public_key().public_numbers()


class TestLoadOrCreate:
    def test_creates_the_file_with_the_requested_number_of_keys(self, tmp_path: Path) -> None:
        """A missing pool file is created holding exactly `size` PKCS#8 keys."""
        path = tmp_path / "sub" / "pool.pem"
        pool = KeyPool.load_or_create(path, 3, key_size=SIZE)
        assert len(pool) == 3
        assert path.read_bytes().count(b"-----BEGIN PRIVATE KEY-----") == 3

    def test_file_is_private_to_the_user(self, tmp_path: Path) -> None:
        """The pool file (unencrypted test keys) is written with mode 0600."""
        path = tmp_path / "pool.pem"
        KeyPool.load_or_create(path, 1, key_size=SIZE)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    def test_reload_returns_the_same_keys_without_generating(self, tmp_path: Path) -> None:
        """Loading an existing pool reuses its keys and reports no generation progress."""
        path = tmp_path / "pool.pem"
        first = KeyPool.load_or_create(path, 2, key_size=SIZE)
        calls: list[tuple[int, int]] = []
        again = KeyPool.load_or_create(path, 2, lambda d, t: calls.append((d, t)), key_size=SIZE)
        assert [_numbers(again.take()) for _ in range(2)] == [_numbers(first.take()) for _ in range(2)]
        assert calls == []

    def test_grows_the_file_keeping_existing_keys_first(self, tmp_path: Path) -> None:
        """Asking for more keys than the file holds appends only the missing ones, with progress."""
        path = tmp_path / "pool.pem"
        small = KeyPool.load_or_create(path, 1, key_size=SIZE)
        calls: list[tuple[int, int]] = []
        big = KeyPool.load_or_create(path, 3, lambda d, t: calls.append((d, t)), key_size=SIZE)
        assert len(big) == 3
        assert _numbers(big.take()) == _numbers(small.take())
        assert calls == [(1, 2), (2, 2)]
        assert path.read_bytes().count(b"-----BEGIN PRIVATE KEY-----") == 3

    def test_asking_for_fewer_keys_loads_all_of_them(self, tmp_path: Path) -> None:
        """A file larger than needed is loaded whole and left unchanged."""
        path = tmp_path / "pool.pem"
        KeyPool.load_or_create(path, 3, key_size=SIZE)
        before = path.read_bytes()
        assert len(KeyPool.load_or_create(path, 1, key_size=SIZE)) == 3
        assert path.read_bytes() == before

    def test_drops_garbage_and_keys_of_another_size(self, tmp_path: Path) -> None:
        """Unreadable blocks and keys of the wrong size are dropped and replaced."""
        path = tmp_path / "pool.pem"
        KeyPool.load_or_create(path, 1, key_size=SIZE)
        good = path.read_bytes()
        garbage = b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"
        path.write_bytes(good + garbage)
        other = tmp_path / "other.pem"
        KeyPool.load_or_create(other, 1, key_size=2048)
        path.write_bytes(good + garbage + other.read_bytes())
        pool = KeyPool.load_or_create(path, 2, key_size=SIZE)
        assert len(pool) == 2
        assert all(pool.take().key_size == SIZE for _ in range(2))
        assert path.read_bytes().count(b"-----BEGIN PRIVATE KEY-----") == 2

    def test_default_path_respects_xdg_cache_home(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The default pool file lives under $XDG_CACHE_HOME/pomona/."""
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        assert default_pool_path() == tmp_path / "pomona" / "keypool-rsa2048.pem"

    def test_default_path_falls_back_to_home_cache(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without XDG_CACHE_HOME the default pool file lives under ~/.cache/pomona/."""
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        monkeypatch.setenv("HOME", str(tmp_path))
        assert default_pool_path() == tmp_path / ".cache" / "pomona" / "keypool-rsa2048.pem"


class TestTake:
    def test_hands_each_key_out_once(self) -> None:
        """take() returns the pool's keys in order, each one once."""
        pool = KeyPool.in_memory(3, key_size=SIZE)
        keys = [pool.take() for _ in range(3)]
        assert len({_numbers(k).n for k in keys}) == 3
        assert pool.remaining == 0

    def test_generates_a_fresh_key_when_the_pool_is_dry(self) -> None:
        """An empty pool still returns a usable key of the pool's size."""
        pool = KeyPool([], key_size=SIZE)
        key = pool.take()
        assert isinstance(key, rsa.RSAPrivateKey)
        assert key.key_size == SIZE

    def test_is_thread_safe(self) -> None:
        """Many threads taking at once never get the same key twice."""
        pool = KeyPool.in_memory(40, key_size=SIZE)
        taken: list[int] = []
        lock = threading.Lock()
        barrier = threading.Barrier(8)

        def worker() -> None:
            barrier.wait()
            for _ in range(5):
                n = _numbers(pool.take()).n
                with lock:
                    taken.append(n)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(taken) == 40
        assert len(set(taken)) == 40
        assert pool.remaining == 0
