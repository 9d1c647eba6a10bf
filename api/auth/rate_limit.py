"""Rate limits of the unauthenticated auth endpoints, counted in Redis so that every worker (and
every API process on the same Redis) shares the counters. Fixed windows: a counter is created by
its first count and expires a window later.

Login: failed attempts are counted three ways (docs/api/AUTH.md, "Login rate limits"):
- per account *and* client address: a guesser locks only itself out of that account, never the
  owner logging in from elsewhere (a per-account counter alone let anyone lock anyone out);
- per client address, whatever the account: one address cannot spray guesses over many accounts;
- per account from all addresses together, a much higher ceiling against guessing spread over
  many addresses. Addresses the account has logged in from lately (a successful login records
  its address for KNOWN_ADDRESS_TTL_S) are exempt from it, so even that ceiling does not lock
  the owner out at their usual address.
An attempt is counted on every counter *before* the password is checked (check and increment
are one Lua script), so a burst of concurrent guesses cannot all pass the check before any
failure is recorded; a successful login then gives the slots back and clears the
(account, address) counter. A request that dies between the two counts as a failure, which
errs on the safe side.

Registration: every attempt from an address counts, successful or not (each new account is a
cash account of INITIAL_CASH, and a 409 tells whether an email is registered).

Key names come from `BusNames` only. A Redis error propagates (503): these endpoints fail
closed rather than unlimited.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from fastapi import Request
from redis.asyncio import Redis

from api.errors import TooManyRequests
from api.settings import ApiSettings
from relayer.bus import BusNames
from relayer.redis_script import RedisScript

# How long a successful login's address stays exempt from the per-account ceiling (renewed by
# every successful login of the account).
KNOWN_ADDRESS_TTL_S = 30 * 24 * 3600

# KEYS: counters; ARGV[1]: window (s); ARGV[1 + i]: limit of KEYS[i].
# Returns 0 when the attempt is allowed (and counted on every key), else the seconds until the
# last over-limit counter expires.
_RESERVE = RedisScript("""
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
""")

# KEYS[1..3]: the (account, address), address and account counters; KEYS[4]: the account's
# known addresses. ARGV[1]: window; ARGV[2..4]: the limits; ARGV[5]: the address. As _RESERVE,
# except that the account ceiling is not checked for a known address (it is still counted).
_RESERVE_LOGIN = RedisScript("""
local window = tonumber(ARGV[1])
local known = redis.call('SISMEMBER', KEYS[4], ARGV[5]) == 1
local wait = 0
for i = 1, 3 do
  local count = tonumber(redis.call('GET', KEYS[i]) or '0')
  if count >= tonumber(ARGV[i + 1]) and not (i == 3 and known) then
    local ttl = redis.call('TTL', KEYS[i])
    if ttl < 0 then
      redis.call('EXPIRE', KEYS[i], window)
      ttl = window
    end
    if ttl > wait then wait = ttl end
  end
end
if wait > 0 then return wait end
for i = 1, 3 do
  redis.call('INCR', KEYS[i])
  if redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], window) end
end
return 0
""")

# KEYS[1]: the (account, address) counter, cleared; KEYS[2], KEYS[3]: the address and account
# counters, whose reservations are given back (without creating a key that has expired
# meanwhile, which would have no TTL); KEYS[4]: known addresses, ARGV[1] added for ARGV[2] s.
_SUCCEEDED = RedisScript("""
redis.call('DEL', KEYS[1])
for i = 2, 3 do
  if tonumber(redis.call('GET', KEYS[i]) or '0') > 0 then redis.call('DECR', KEYS[i]) end
end
redis.call('SADD', KEYS[4], ARGV[1])
redis.call('EXPIRE', KEYS[4], tonumber(ARGV[2]))
return 0
""")


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """A counted login attempt: a failure until `login_succeeded` says otherwise."""

    account_address_key: str
    address_key: str
    account_key: str
    known_addresses_key: str
    address: str

    @classmethod
    def of(cls, names: BusNames, email: str, address: str) -> LoginAttempt:
        # The address comes first: it never contains "/", so the pair is unambiguous.
        return cls(names.login_attempts("account_address", f"{address}/{email}"),
                   names.login_attempts("address", address),
                   names.login_attempts("account", email),
                   names.login_known_addresses(email), address)


async def begin_login_attempt(redis: Redis, names: BusNames, settings: ApiSettings,
                              email: str, address: str) -> LoginAttempt:
    """Count one attempt for `email` (normalised) from `address`, or raise TooManyRequests
    (429, Retry-After) when one of its counters has used up its failures for the window."""
    attempt = LoginAttempt.of(names, email, address)
    wait_s = int(await _RESERVE_LOGIN(
        redis, keys=[attempt.account_address_key, attempt.address_key, attempt.account_key,
              attempt.known_addresses_key],
        args=[settings.login_window_s, settings.login_max_attempts_per_account_address,
              settings.login_max_attempts_per_address, settings.login_max_attempts_per_account,
              address],
    ))
    if wait_s > 0:
        raise TooManyRequests(f"too many failed logins; try again in {wait_s} s",
                              code="too_many_login_attempts", retry_after_s=wait_s)
    return attempt


async def login_succeeded(redis: Redis, attempt: LoginAttempt) -> None:
    await _SUCCEEDED(redis, keys=[attempt.account_address_key, attempt.address_key,
                                  attempt.account_key, attempt.known_addresses_key],
                     args=[attempt.address, KNOWN_ADDRESS_TTL_S])


async def count_registration(redis: Redis, names: BusNames, settings: ApiSettings,
                             address: str) -> None:
    """Count one registration attempt from `address`, or raise TooManyRequests (429,
    Retry-After) when the address has used up its registrations for the window."""
    wait_s = int(await _RESERVE(redis, keys=[names.registrations(address)],
                                args=[settings.register_window_s,
                                      settings.register_max_per_address]))
    if wait_s > 0:
        raise TooManyRequests(f"too many registrations from this address; try again in "
                              f"{wait_s} s", code="too_many_registrations",
                              retry_after_s=wait_s)


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
