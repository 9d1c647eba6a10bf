"""Login rate limiting: failed attempts per account (email) and per client address, counted in
Redis so that every worker shares the same counters.

Fixed windows: a counter is created by the first failure and expires LOGIN_WINDOW_S later.
An attempt is counted *before* the password is checked (check and increment are one Lua script),
so that a burst of concurrent guesses cannot all pass the check before any failure is recorded;
a successful login then clears the account's counter and gives the address back its slot. A
request that dies between the two counts as a failure, which errs on the safe side.

Key names come from `BusNames.login_attempts` only. A Redis error propagates (503): logins
fail closed rather than unlimited.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from fastapi import Request
from redis.asyncio import Redis

from api.errors import TooManyRequests
from api.settings import ApiSettings
from relayer.bus import BusNames

# KEYS: counters; ARGV[1]: window (s); ARGV[1 + i]: limit of KEYS[i].
# Returns 0 when the attempt is allowed (and counted on every key), else the seconds until the
# last over-limit counter expires.
_RESERVE = """
local window = tonumber(ARGV[1])
local wait = 0
for i, key in ipairs(KEYS) do
  local count = tonumber(redis.call('GET', key) or '0')
  if count >= tonumber(ARGV[i + 1]) then
    local ttl = redis.call('TTL', key)
    if ttl < 0 then
      redis.call('EXPIRE', key, window)
      ttl = window
    end
    if ttl > wait then wait = ttl end
  end
end
if wait > 0 then return wait end
for _, key in ipairs(KEYS) do
  redis.call('INCR', key)
  if redis.call('TTL', key) < 0 then redis.call('EXPIRE', key, window) end
end
return 0
"""

# KEYS[1]: account counter, cleared; KEYS[2]: address counter, whose reservation is given back
# (without creating a key that has expired meanwhile, which would have no TTL).
_SUCCEEDED = """
redis.call('DEL', KEYS[1])
if tonumber(redis.call('GET', KEYS[2]) or '0') > 0 then redis.call('DECR', KEYS[2]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """A counted login attempt: a failure until `login_succeeded` says otherwise."""

    account_key: str
    address_key: str


async def begin_login_attempt(redis: Redis, names: BusNames, settings: ApiSettings,
                              email: str, address: str) -> LoginAttempt:
    """Count one attempt for `email` (normalised) from `address`, or raise TooManyRequests
    (429, Retry-After) when either has used up its failures for the current window."""
    attempt = LoginAttempt(names.login_attempts("account", email),
                           names.login_attempts("address", address))
    reserve = redis.register_script(_RESERVE)
    wait_s = int(await reserve(
        keys=[attempt.account_key, attempt.address_key],
        args=[settings.login_window_s, settings.login_max_attempts_per_account,
              settings.login_max_attempts_per_address],
    ))
    if wait_s > 0:
        raise TooManyRequests(f"too many failed logins; try again in {wait_s} s",
                              code="too_many_login_attempts", retry_after_s=wait_s)
    return attempt


async def login_succeeded(redis: Redis, attempt: LoginAttempt) -> None:
    succeeded = redis.register_script(_SUCCEEDED)
    await succeeded(keys=[attempt.account_key, attempt.address_key])


def client_address(request: Request, trust_forwarded_for: bool) -> str:
    """The caller's address: the socket peer, or the first X-Forwarded-For entry when the
    deployment says a proxy sets that header (TRUST_FORWARDED_FOR). The proxy must *replace*
    the header: an entry the client wrote itself would let it pick its own rate-limit bucket."""
    if trust_forwarded_for:
        forwarded = request.headers.get("x-forwarded-for", "")
        first = forwarded.split(",", 1)[0].strip()
        try:
            return str(ipaddress.ip_address(first))
        except ValueError:
            pass  # absent or not an address: fall back to the peer
    return request.client.host if request.client else "unknown"
