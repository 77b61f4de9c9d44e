"""`orderbus user create|list`: the accounts an operator makes by hand, first of all the super_admin.

Why a CLI: the first super_admin cannot be invited by anyone, and the API makes no super_admin at
all, so whoever holds the data directory (or the database URL) makes one here; they then log in
through the API and the dashboard like anyone else. The password is typed at a hidden prompt (twice)
or read from the first line of stdin with `--password-stdin` (for scripts), hashed with argon2, and
never printed nor logged.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Engine

from cli.errors import CONFIG_ERRORS, fail
from cli.options import ConfigFile, DatabaseUrl, DataDir
from config.settings import Settings, load_settings
from core import db
from core.commands import AdminIn, Password
from core.domain import DomainError
from core.services import users
from core.topics import ADMIN, STAFF
from core.unit_of_work import UnitOfWork

user_app = typer.Typer(no_args_is_help=True, help="User accounts: make a super_admin (or any user), list them.")


def _engine(data_dir: Path | None, database_url: str | None, config: Path | None) -> Engine:
    """The database, made at the head revision when it is new (as `orderbus up` would), else checked."""
    try:
        settings: Settings = load_settings(config, data_dir=data_dir, database_url=database_url)
    except CONFIG_ERRORS as exc:
        fail(str(exc))
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        engine = db.make_engine(settings.db_url)
        if db.current(engine) is None:
            db.upgrade(engine)  # a new database (or one made before migrations), as `orderbus up` does
        else:
            db.check_current(engine)
    except db.SchemaOutOfDate as exc:
        fail(f"{exc}; run `orderbus db upgrade` with the same --data-dir / --database-url first")
    except db.DatabaseError as exc:
        fail(str(exc))
    return engine


def _password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        return TypeAdapter(Password).validate_python(password)
    except ValidationError:
        fail("the password needs 8 to 200 characters on one line")


@user_app.command("create")
def create(
    email: Annotated[str, typer.Option(help="The login email.")],
    name: Annotated[str, typer.Option(help="The person's name.")],
    super_admin: Annotated[
        bool, typer.Option("--super-admin", help="An operator of every restaurant (no --restaurant).")
    ] = False,
    restaurant: Annotated[int | None, typer.Option(help="The restaurant of an admin or staff member.")] = None,
    role: Annotated[str, typer.Option(help="admin or staff, with --restaurant.")] = ADMIN,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
    ] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
) -> None:
    """Make a user who can log in at once: `--super-admin`, or `--restaurant R --role admin|staff`."""
    if super_admin == (restaurant is not None):
        fail("give either --super-admin or --restaurant R (with --role admin or staff)")
    if role not in (ADMIN, STAFF):
        fail("--role must be admin or staff")
    try:
        person = AdminIn(email=email, name=name)
    except ValidationError as exc:
        problems = "; ".join(f"--{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        fail(problems)
    password = _password(password_stdin)
    engine = _engine(data_dir, database_url, config)
    try:
        with UnitOfWork(engine) as uow:
            if super_admin:
                user = users.create_super_admin(uow, str(person.email), person.name, password)
            else:
                assert restaurant is not None
                user = users.create_user(uow, restaurant, str(person.email), person.name, role, password)
            uow.commit()
    except DomainError as exc:
        fail(str(exc))
    finally:
        engine.dispose()
    where = "every restaurant" if super_admin else f"restaurant {restaurant}"
    print(f"created {user.role} {user.email} (user {user.id}) for {where}; log in at POST /api/v1/auth/login")


@user_app.command("list")
def list_users(
    restaurant: Annotated[
        int | None, typer.Option(help="List this restaurant's users (without it: the super_admins).")
    ] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
) -> None:
    """List super_admins, or the users of one restaurant: id, role, email, name (never a password)."""
    engine = _engine(data_dir, database_url, config)
    try:
        with UnitOfWork(engine) as uow:
            rows = users.list_super_admins(uow) if restaurant is None else users.list_of(uow, restaurant)
            lines = [f"{user.id}\t{user.role}\t{user.email}\t{user.name}" for user in rows]
    finally:
        engine.dispose()
    for line in lines:
        print(line)
