"""Users: a restaurant's admins invite and remove its staff and admins; everyone changes their own password.

The rules (who may act on whom) are the service's (core/services/users.py), so this router only
turns the caller's token into an `Actor`; a broken rule comes back as 403, 404, 400 or 409.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from api.deps import AdminScope, CurrentUser, Paging, StaffScope, UowDep
from api.openapi import errors
from api.schemas import InvitedUserOut, Page, UserOut, invited_out, user_out
from core.commands import Id, PasswordChangeIn, UserIn
from core.services import users
from core.services.users import Actor

router = APIRouter(tags=["users"])

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def get_actor(caller: CurrentUser) -> Actor:
    return Actor.from_claims(caller.claims)


ActorDep = Annotated[Actor, Depends(get_actor)]


@router.get("/restaurants/{restaurant_id}/users")
def list_users(restaurant_id: StaffScope, actor: ActorDep, uow: UowDep, window: Paging) -> Page[UserOut]:
    """The restaurant's admins and staff, for its own users and super_admins."""
    found = users.list_users(uow, actor, restaurant_id, window)
    return Page(data=[user_out(user) for user in found.rows], count=found.count)


@router.post("/restaurants/{restaurant_id}/users", status_code=status.HTTP_201_CREATED)
def invite_user(
    restaurant_id: AdminScope, body: UserIn, actor: ActorDep, uow: UowDep, response: Response
) -> InvitedUserOut:
    """Invite an admin or staff member (admins and super_admins only): the account is made at once with a
    one-time password, shown in this answer only. Pass it on; they log in and change it
    (`POST /users/me/password`). 409 when the email is taken."""
    response.headers.update(NO_STORE)
    return invited_out(users.invite(uow, actor, restaurant_id, body))


@router.delete("/restaurants/{restaurant_id}/users/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
def remove_user(restaurant_id: AdminScope, user_id: Id, actor: ActorDep, uow: UowDep) -> None:
    """Remove a user of the restaurant (admins and super_admins): never yourself nor its last admin (409)."""
    users.remove(uow, actor, restaurant_id, user_id)


@router.get("/users/me")
def read_own_account(actor: ActorDep, uow: UowDep) -> UserOut:
    """The logged-in user's own account."""
    return user_out(users.get_self(uow, actor))


@router.post(
    "/users/me/password", status_code=status.HTTP_204_NO_CONTENT, responses=errors(400, why="Wrong current password")
)
def change_password(body: PasswordChangeIn, actor: ActorDep, uow: UowDep) -> None:
    """Change your own password; 400 when `current_password` is wrong. Every token issued before, this
    one included, stops working: log in again with the new password."""
    users.change_password(uow, actor, body)
