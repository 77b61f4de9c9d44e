"""Users: who may log in, and who may add or remove whom.

Three roles. A `super_admin` runs the chain: made by the CLI only (`orderbus user create
--super-admin`), belongs to no restaurant, and may act on every restaurant's users. An `admin`
runs one restaurant: invites and removes that restaurant's staff and admins. `staff` invite no one.
Nobody but a super_admin acts on another restaurant's users.

"Invite" is kept simple: the account is made at once with a one-time password that this service
generates and hands back once (the API answers it in the 201 and never again; only its argon2
hash is stored). The inviter passes it on; the person logs in with it and sets their own with
`change_password`. No e-mail is sent: orderbus has no mail server to rely on.

The rules are checked here, not only by the API's scope check, so a CLI or a later transport
cannot skip them. A broken rule is a `DomainError`: Forbidden (403), NotFound (404),
WrongPassword (400), anything else a conflict (409).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.sql.expression import SelectOfScalar

from core.commands import AdminIn, NewRestaurantIn, PasswordChangeIn, UserIn
from core.domain import DomainError, Forbidden, NotFound, WrongPassword
from core.locking import locked
from core.models import Restaurant, User
from core.paging import EVERYTHING, Page, Window, page
from core.passwords import hash_password, verify_password
from core.services import restaurants
from core.topics import ADMIN, STAFF, SUPER_ADMIN
from core.unit_of_work import UnitOfWork

USER_SUB_PREFIX = "user-"  # the `sub` of a logged-in user's tokens: user-<id>


@dataclass(frozen=True)
class Actor:
    """Who asks: the role and restaurant of their token, and their user id when they logged in
    (a token minted by the operator's CLI, `orderbus token`, has none)."""

    role: str
    restaurant_id: int | None
    user_id: int | None = None

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> Actor:
        uid = claims.get("uid")
        return cls(claims["role"], claims.get("rid"), uid if isinstance(uid, int) else None)


def session_claims(user: User) -> dict[str, Any]:
    """What a login puts in the user's API token besides sub, role and rid: the user id, and a stamp of
    the password hash, so that removing the user or changing the password ends the sessions issued before."""
    return {"uid": user.id, "pv": password_stamp(user)}


def session_is_current(uow: UnitOfWork, claims: dict[str, Any]) -> bool:
    """Whether a login's token still speaks for its user: the user exists with the same role, restaurant
    and password. A token without `uid` is not a login's (the operator's CLI mints those) and is not checked."""
    if "uid" not in claims:
        return True
    user = uow.session.get(User, claims["uid"]) if isinstance(claims["uid"], int) else None
    return (
        user is not None
        and user.role == claims["role"]
        and user.restaurant_id == claims.get("rid")
        and password_stamp(user) == claims.get("pv")
    )


def password_stamp(user: User) -> str:
    """Changes with every password (the argon2 hash is salted anew): not the hash, nor anything to guess from."""
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Invited:
    """A new user and their one-time password (hand it on; it is not kept)."""

    user: User
    password: str


def authenticate(uow: UnitOfWork, email: str, password: str) -> User | None:
    """The user with this email and password; None for a wrong one of either (the caller says which not)."""
    user = _by_email(uow, email)
    if user is None or not verify_password(password, user.password_hash):
        return None
    return user


def create_super_admin(uow: UnitOfWork, email: str, name: str, password: str) -> User:
    """An operator of the whole chain, with the password they typed (the CLI's job; no API makes one)."""
    return _add(uow, None, email, name, SUPER_ADMIN, password)


def create_user(uow: UnitOfWork, rid: int, email: str, name: str, role: str, password: str) -> User:
    """An admin or staff member of restaurant `rid` with a chosen password: the operator's CLI, which the
    API's rules do not bind (whoever runs it holds the database)."""
    if role not in (ADMIN, STAFF):
        raise DomainError(f"role must be {ADMIN} or {STAFF}")
    return _add(uow, rid, email, name, role, password)


def create_restaurant(uow: UnitOfWork, actor: Actor, data: NewRestaurantIn) -> tuple[Restaurant, Invited | None]:
    """A restaurant and its first admin, in the caller's one transaction: both or neither."""
    if actor.role != SUPER_ADMIN:
        raise Forbidden("only a super_admin adds restaurants")
    restaurant = restaurants.create_restaurant(uow, data)
    assert restaurant.id is not None
    admin = _invite(uow, restaurant.id, data.admin, ADMIN) if data.admin is not None else None
    return restaurant, admin


def invite(uow: UnitOfWork, actor: Actor, rid: int, data: UserIn) -> Invited:
    """A new admin or staff member of restaurant `rid`, by its admin or a super_admin."""
    _may_manage(uow, actor, rid)
    return _invite(uow, rid, data, data.role)


def list_users(uow: UnitOfWork, actor: Actor, rid: int, window: Window = EVERYTHING) -> Page[User]:
    """The users of restaurant `rid`, oldest first: its own staff and admins may see who works there."""
    _may_see(uow, actor, rid)
    return page(uow, _of(rid), window)


def list_of(uow: UnitOfWork, rid: int) -> list[User]:
    return list(uow.session.exec(_of(rid)))


def _of(rid: int) -> SelectOfScalar[User]:
    return select(User).where(User.restaurant_id == rid).order_by(col(User.id))


def remove(uow: UnitOfWork, actor: Actor, rid: int, user_id: int) -> None:
    """Remove a user of restaurant `rid`: not yourself, and never its last admin.

    The restaurant row is locked first (core.locking), so two admins removing each other at once
    cannot both pass the last-admin check on PostgreSQL."""
    _may_manage(uow, actor, rid)
    locked(uow.session, Restaurant, rid)
    user = uow.session.get(User, user_id)
    if user is None or user.restaurant_id != rid:
        raise NotFound(f"user {user_id} not found in restaurant {rid}")
    if user.id == actor.user_id:
        raise DomainError("you cannot remove yourself; ask another admin")
    if user.role == ADMIN and _admins(uow, rid) <= 1:
        raise DomainError("a restaurant keeps at least one admin: invite another before removing this one")
    uow.session.delete(user)
    uow.session.flush()


def get_self(uow: UnitOfWork, actor: Actor) -> User:
    """The caller's own user row; NotFound for a token of no user (an operator's, or one removed since)."""
    user = uow.session.get(User, actor.user_id) if actor.user_id is not None else None
    if user is None:
        raise NotFound("this token belongs to no user account")
    return user


def change_password(uow: UnitOfWork, actor: Actor, data: PasswordChangeIn) -> None:
    """The caller's own password, confirmed by the current one. Every session issued before ends with it
    (`session_is_current`): whoever else knew the old password is logged out; the caller logs in again."""
    user = get_self(uow, actor)
    if not verify_password(data.current_password, user.password_hash):
        raise WrongPassword("the current password is wrong")
    if data.new_password == data.current_password:
        raise DomainError("the new password is the current one")
    user.password_hash = hash_password(data.new_password)
    uow.session.add(user)
    uow.session.flush()


def list_super_admins(uow: UnitOfWork) -> list[User]:
    return list(uow.session.exec(select(User).where(User.role == SUPER_ADMIN).order_by(col(User.id))))


# --- rules --------------------------------------------------------------------------------------


def _may_see(uow: UnitOfWork, actor: Actor, rid: int) -> None:
    if actor.role != SUPER_ADMIN and actor.restaurant_id != rid:
        raise Forbidden("not your restaurant")
    if actor.role not in (SUPER_ADMIN, ADMIN, STAFF):
        raise Forbidden(f"role {actor.role} may not see users")
    if uow.session.get(Restaurant, rid) is None:
        raise NotFound(f"restaurant {rid} not found")


def _may_manage(uow: UnitOfWork, actor: Actor, rid: int) -> None:
    _may_see(uow, actor, rid)
    if actor.role not in (SUPER_ADMIN, ADMIN):
        raise Forbidden(f"role {actor.role} may not add or remove users")


def _invite(uow: UnitOfWork, rid: int, data: UserIn | AdminIn, role: str) -> Invited:
    password = secrets.token_urlsafe(12)  # 16 characters, 96 bits
    return Invited(_add(uow, rid, str(data.email), data.name, role, password), password)


def _add(uow: UnitOfWork, rid: int | None, email: str, name: str, role: str, password: str) -> User:
    if rid is not None:
        restaurants.open_restaurant(uow, rid)
    if _by_email(uow, email) is not None:
        raise DomainError(f"a user with email {email.lower()} exists already")
    user = User(restaurant_id=rid, email=email.lower(), name=name, role=role, password_hash=hash_password(password))
    uow.session.add(user)
    uow.session.flush()  # its id; a concurrent insert of the same email fails here on the unique index
    return user


def _by_email(uow: UnitOfWork, email: str) -> User | None:
    return uow.session.exec(select(User).where(User.email == email.lower())).first()


def _admins(uow: UnitOfWork, rid: int) -> int:
    query = select(func.count()).select_from(User).where(User.restaurant_id == rid, User.role == ADMIN)
    return int(uow.session.exec(query).one())
