"""The topic-ACL policy: one place that decides who may subscribe to and publish what.

Every backend (the embedded amqtt plugins, the NATS auth-callout responder) asks this module.
Patterns come from `config/acl.toml`; placeholders are filled from the token's claims.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from broker import topics

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


class PolicyError(ValueError):
    """The policy file is malformed."""


@dataclass(frozen=True)
class RoleRules:
    subscribe: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    retain: tuple[str, ...] = ()


@dataclass(frozen=True)
class Grants:
    """What one connection may do, with its placeholders already filled in."""

    subscribe: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    retain: tuple[str, ...] = ()

    def may_subscribe(self, topic_filter: str) -> bool:
        return topics.is_valid_filter(topic_filter) and any(
            topics.covers(allowed, topic_filter) for allowed in self.subscribe
        )

    def may_receive(self, topic: str) -> bool:
        return _may_receive(self.subscribe, topic)

    def may_publish(self, topic: str, *, retain: bool = False) -> bool:
        allowed = self.retain if retain else self.publish
        return topics.is_valid_topic(topic) and any(topics.matches(pattern, topic) for pattern in allowed)


@dataclass(frozen=True)
class Policy:
    roles: dict[str, RoleRules] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Policy:
        """PolicyError, one line naming the file and what is wrong with it (the CLI prints it as it is)."""
        try:
            raw = tomllib.loads(path.read_text())
        except OSError as exc:
            raise PolicyError(f"{path}: cannot read ACL policy: {exc.strerror or exc}") from exc
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise PolicyError(f"{path}: cannot read ACL policy: not valid TOML: {exc}") from exc
        try:
            return cls.from_dict(raw)
        except PolicyError as exc:
            raise PolicyError(f"{path}: bad ACL policy: {exc}") from None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Policy:
        unknown_top = set(raw) - {"roles"}
        if unknown_top:
            raise PolicyError(f"unknown keys {sorted(unknown_top)}")
        roles_raw = raw.get("roles", {})
        if not isinstance(roles_raw, dict):
            raise PolicyError("`roles` must be a table of roles")
        roles: dict[str, RoleRules] = {}
        for name, rules in roles_raw.items():
            if not isinstance(rules, dict):
                raise PolicyError(f"role {name!r}: must be a table")
            unknown = set(rules) - {"subscribe", "publish", "retain"}
            if unknown:
                raise PolicyError(f"role {name!r}: unknown keys {sorted(unknown)}")
            for key in ("subscribe", "publish", "retain"):
                # a bare string would be split into one-character patterns, `#` among them
                if not isinstance(rules.get(key, []), list):
                    raise PolicyError(f"role {name!r}: {key} must be a list of patterns")
            lists = {key: tuple(rules.get(key, [])) for key in ("subscribe", "publish", "retain")}
            for pattern in (p for patterns in lists.values() for p in patterns):
                if not isinstance(pattern, str) or not topics.is_valid_filter(_PLACEHOLDER.sub("x", pattern)):
                    raise PolicyError(f"role {name!r}: invalid pattern {pattern!r}")
            roles[name] = RoleRules(**lists)
        return cls(roles)

    def grants(self, claims: dict[str, Any]) -> Grants:
        """The grants of a token; an unknown role gets nothing."""
        rules = self.roles.get(str(claims.get("role")))
        if rules is None:
            return Grants()
        return Grants(
            subscribe=_fill_all(rules.subscribe, claims),
            publish=_fill_all(rules.publish, claims),
            retain=_fill_all(rules.retain, claims),
        )


@lru_cache(maxsize=65536)
def _may_receive(subscribe: tuple[str, ...], topic: str) -> bool:
    """Asked once per delivery, for the same few topics again and again: worth remembering."""
    return any(topics.matches(allowed, topic) for allowed in subscribe)


def _fill_all(patterns: tuple[str, ...], claims: dict[str, Any]) -> tuple[str, ...]:
    filled = (_fill(pattern, claims) for pattern in patterns)
    return tuple(pattern for pattern in filled if pattern is not None)


def _fill(pattern: str, claims: dict[str, Any]) -> str | None:
    """Substitute claims into a pattern; None when a claim is missing or would inject a wildcard."""
    missing = False

    def value(match: re.Match[str]) -> str:
        nonlocal missing
        claim = claims.get(match.group(1))
        text = "" if claim is None else str(claim)
        if not text or any(c in text for c in "/+#\x00"):
            missing = True
        return text

    filled = _PLACEHOLDER.sub(value, pattern)
    return None if missing else filled
