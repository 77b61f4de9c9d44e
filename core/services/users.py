"""Users of the REST API: who they are is checked here; what they may do is the API's scope check."""

from __future__ import annotations

from sqlmodel import select

from core.models import User
from core.passwords import verify_password
from core.unit_of_work import UnitOfWork


def authenticate(uow: UnitOfWork, email: str, password: str) -> User | None:
    """The user with this email and password; None for a wrong one of either (the caller says which not)."""
    user = uow.session.exec(select(User).where(User.email == email.lower())).first()
    if user is None or not verify_password(password, user.password_hash):
        return None
    return user
