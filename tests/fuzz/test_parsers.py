"""Every parser reachable without a credential, fed mutated seeds and random bytes by hypothesis: what
escapes is only the parser's documented error (a short run here; bench/fuzz.py runs 100,000 per parser)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.targets import TARGETS, Target, feed


@st.composite
def mutated(draw: st.DrawFn, seeds: tuple[bytes, ...]) -> bytes:
    """A seed with a few byte-level edits: flips, inserts, deletions, truncation, duplicated spans."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 6))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(("flip", "set", "insert", "delete", "truncate", "repeat")))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[i] = draw(st.sampled_from((0, 0x7F, 0x80, 0xFF, ord("<"), ord("("), ord(","), 0x30)))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 64))]
        elif op == "truncate":
            del data[i:]
        else:
            data[i:i] = data[i : i + draw(st.integers(1, 32))] * draw(st.integers(2, 50))
    return bytes(data)


def inputs(target: Target) -> st.SearchStrategy[bytes]:
    seeds = tuple(target.seeds())
    return st.one_of(mutated(seeds), st.binary(max_size=512))


# A short run per parser: the whole directory stays well under 40 s on one core.
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None)


class TestParsersStayInTheirErrorTree:
    @pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
    def test_mutated_and_random_inputs(self, target: Target) -> None:
        """Mutated seeds and random bytes raise nothing but the parser's documented errors."""

        @FUZZ
        @given(data=inputs(target))
        def run(data: bytes) -> None:
            escaped = feed(target, data)
            assert escaped is None, f"{target.name}: {type(escaped).__name__}: {escaped} on {data[:200]!r}"

        run()

    @pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
    def test_seeds_are_there(self, target: Target) -> None:
        """Each parser has seeds to mutate (the shared captures, or our own codecs' output)."""
        assert target.seeds()
