"""The per-process cache of verified access tokens: fast, but never more lenient than verify()."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api.auth.tokens import AccessTokenCache, Principal, TokenType, issue
from api.errors import Unauthorized
from api.models import Role

KEY = "cache-test-key-" + "c" * 40
ALICE = Principal(7, "alice@example.com", Role.USER)


def test_cached_token_answers_the_same_principal() -> None:
    cache = AccessTokenCache(KEY)
    token = issue(ALICE, TokenType.ACCESS, KEY, 60)
    assert cache.verify(token) == ALICE
    assert cache.verify(token) == ALICE


def test_a_cached_token_is_refused_once_its_exp_has_passed() -> None:
    cache = AccessTokenCache(KEY)
    issued = datetime.now(UTC) - timedelta(seconds=120)
    token = issue(ALICE, TokenType.ACCESS, KEY, 60, now=issued)  # expired a minute ago
    # Even if a verdict for it were cached, an expired entry is verified afresh.
    cache._verified[token] = (ALICE, (issued + timedelta(seconds=60)).timestamp())
    with pytest.raises(Unauthorized, match="expired"):
        cache.verify(token)


@pytest.mark.parametrize("kind", [TokenType.REFRESH])
def test_only_access_tokens_and_only_our_key(kind: TokenType) -> None:
    cache = AccessTokenCache(KEY)
    with pytest.raises(Unauthorized):
        cache.verify(issue(ALICE, kind, KEY, 60))
    with pytest.raises(Unauthorized):
        cache.verify(issue(ALICE, TokenType.ACCESS, "another-key-" + "z" * 40, 60))


def test_the_cache_is_bounded() -> None:
    cache = AccessTokenCache(KEY, max_entries=3)
    tokens = [issue(Principal(i, f"u{i}@example.com", Role.USER), TokenType.ACCESS, KEY, 60)
              for i in range(5)]
    for token in tokens:
        cache.verify(token)
    assert len(cache._verified) <= 3
