"""Start-up state: default organisation, price catalogue, first admin, config file."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agentwatch.config_file import GatewayConfig, apply_config
from agentwatch.crypto import Keys, hash_password
from agentwatch.db.models import Model, Organization, User
from agentwatch.pricing import shipped_prices

log = logging.getLogger(__name__)
DEFAULT_ORG = "default"


async def ensure_default_org(session: AsyncSession) -> int:
    org_id = await session.scalar(select(Organization.id).where(Organization.name == DEFAULT_ORG))
    if org_id is None:
        org = Organization(name=DEFAULT_ORG, settings={})
        session.add(org)
        await session.flush()
        org_id = org.id
    return org_id


async def seed_prices(session: AsyncSession, org_id: int) -> None:
    """Add shipped prices the organisation lacks; never overwrite an edited price."""
    existing = set(await session.scalars(select(Model.name).where(Model.org_id == org_id)))
    for name, price in shipped_prices().items():
        if name not in existing:
            session.add(
                Model(
                    org_id=org_id,
                    name=name,
                    routes=[],
                    input_cost_per_mtok=price.input_per_mtok,
                    output_cost_per_mtok=price.output_per_mtok,
                    cached_input_cost_per_mtok=price.cached_input_per_mtok,
                    cache_write_cost_per_mtok=price.cache_write_per_mtok,
                )
            )


async def create_admin(
    session: AsyncSession, org_id: int, email: str, password: str, *, super_admin: bool = True
) -> User:
    user = await session.scalar(select(User).where(User.email == email.lower()))
    if user is None:
        user = User(org_id=org_id, email=email.lower(), password_hash=hash_password(password))
        session.add(user)
    else:
        user.password_hash = hash_password(password)
    user.is_super_admin = super_admin
    user.role = "org_admin"
    user.is_active = True
    user.failed_logins = 0
    user.locked_until = None
    await session.flush()
    return user


async def bootstrap(
    sessions: async_sessionmaker[AsyncSession],
    *,
    encryption_key: Keys,
    config: GatewayConfig | None,
    admin_email: str | None,
    admin_password: str | None,
) -> int:
    """Bring the database to the state start-up promises; returns the default org id."""
    async with sessions.begin() as session:
        org_id = await ensure_default_org(session)
        await seed_prices(session, org_id)
        if admin_email and admin_password:
            has_admin = await session.scalar(select(User.id).where(User.is_super_admin).limit(1))
            if has_admin is None:
                await create_admin(session, org_id, admin_email, admin_password)
                log.info("created the first super admin %s", admin_email)
        if config is not None:
            await apply_config(session, config, org_id, encryption_key)
    return org_id
