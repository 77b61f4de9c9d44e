"""The login limit: failed logins per account and per address, answered 429 with Retry-After, counted.

Why two keys: per account stops guessing one person's password from many addresses; per address
stops one machine trying many accounts. The account limit is the lower one, and only failures
count, so colleagues behind one restaurant router (one address) log in as usual while one account
is being guessed, until the address itself passes its own, higher limit. A success clears its
account's failures, never the address's: one valid account must not reset a guessing address.

A limited attempt is refused before its password is checked, so it costs no argon2 work either.
Accounts are counted by the email as typed (lower-cased) whether or not such a user exists, so the
answer says nothing about which emails are users. The limit lives in the API process (app.state):
several API processes each count their own, and the address is the TCP peer (behind a proxy, the
proxy's, unless uvicorn's --forwarded-allow-ips passes the client's on).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from fastapi import HTTPException, status
from prometheus_client import Counter

from core.rate_limit import FailureWindow

log = logging.getLogger("orderbus.api")

LOGIN_OUTCOMES = ("success", "failure", "limited_account", "limited_address")
LOGINS = Counter(
    "orderbus_logins",
    "Login attempts by outcome: success, failure (wrong email or password), limited_account and "
    "limited_address (refused 429 by the failed-login limit, before the password was checked)",
    ["outcome"],
)
for _outcome in LOGIN_OUTCOMES:  # read 0 rather than be absent
    LOGINS.labels(outcome=_outcome)


@dataclass
class LoginLimit:
    accounts: FailureWindow
    addresses: FailureWindow

    @classmethod
    def build(cls, per_account: int, per_address: int, window_seconds: float) -> LoginLimit:
        return cls(FailureWindow(per_account, window_seconds), FailureWindow(per_address, window_seconds))

    def check(self, email: str, address: str) -> None:
        """Raise 429 (with Retry-After in whole seconds) when this account or address is limited."""
        for window, key, outcome, whom in (
            (self.accounts, email.lower(), "limited_account", "this account"),
            (self.addresses, address, "limited_address", "this address"),
        ):
            wait = window.retry_after(key)
            if wait > 0:
                LOGINS.labels(outcome=outcome).inc()
                seconds = max(1, math.ceil(wait))
                log.warning("login limited (%s) from %s: refused for %d s", outcome, address, seconds)
                raise HTTPException(
                    status.HTTP_429_TOO_MANY_REQUESTS,
                    f"too many failed logins for {whom}; try again in {seconds} s",
                    {"Retry-After": str(seconds)},
                )

    def failed(self, email: str, address: str) -> None:
        LOGINS.labels(outcome="failure").inc()
        self.accounts.failed(email.lower())
        self.addresses.failed(address)

    def succeeded(self, email: str) -> None:
        LOGINS.labels(outcome="success").inc()
        self.accounts.forget(email.lower())
