"""The `agentwatch` command line: serve, migrate, and the first admin tasks."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from agentwatch.admin.audit import AuditEvent, append_audit
from agentwatch.admin.passwords import PasswordRejected, check_password
from agentwatch.bootstrap import create_admin, ensure_default_org
from agentwatch.config_file import ConfigError, GatewayConfig, load_config
from agentwatch.crypto import (
    DecryptionError,
    Keyring,
    decrypt_secret,
    encrypt_secret,
    hash_tenant_key,
    key_prefix,
    needs_rotation,
    new_tenant_key,
)
from agentwatch.crypto import key_id as encryption_key_id
from agentwatch.db.engine import create_engine, session_factory
from agentwatch.db.migrate import upgrade_database
from agentwatch.db.models import ApiKey, Provider, ProviderKey, Tenant
from agentwatch.dlp.scan_command import add_scan_arguments, run_scan
from agentwatch.settings import DEV_SECRETS_FILE, Settings, SettingsError, load_settings

log = logging.getLogger("agentwatch")


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        raise SystemExit(2)
    if args.run is _dlp_scan:
        # Needs no settings, database or data directory, so it runs anywhere (CI, hooks).
        raise SystemExit(run_scan(args))
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"agentwatch: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.log_level != "DEBUG":
        # One line per migration at every start is noise; DEBUG shows them.
        logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        args.run(settings, args)
    except (ConfigError, SettingsError, CommandError) as exc:
        print(f"agentwatch: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


class CommandError(RuntimeError):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentwatch", description="Self-hosted LLM gateway.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway", description="Run the gateway.")
    serve.add_argument("--config", type=Path, help="declarative YAML (default: $AGENTWATCH_CONFIG)")
    serve.add_argument("--host", help="bind address (default: $HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: $PORT or 8787)")
    serve.add_argument(
        "--workers", type=int, help="worker processes (default: $AGENTWATCH_WORKERS or 1)"
    )
    serve.set_defaults(run=_serve)

    db = commands.add_parser("db", help="database maintenance", description="Database maintenance.")
    db_commands = db.add_subparsers(title="commands", metavar="COMMAND", required=True)
    upgrade = db_commands.add_parser(
        "upgrade", help="apply migrations", description="Apply every pending migration."
    )
    upgrade.set_defaults(run=_db_upgrade)

    users = commands.add_parser("users", help="admin users", description="Manage admin users.")
    user_commands = users.add_subparsers(title="commands", metavar="COMMAND", required=True)
    create_admin_cmd = user_commands.add_parser(
        "create-admin",
        help="create (or reset) a super admin",
        description="Create a super admin, or reset the password of an existing one.",
    )
    create_admin_cmd.add_argument("--email", required=True)
    create_admin_cmd.add_argument("--password", required=True)
    create_admin_cmd.set_defaults(run=_create_admin)

    keys = commands.add_parser(
        "keys",
        help="tenant API keys and provider-key encryption",
        description="Manage tenant API keys and the encryption of provider keys.",
    )
    key_commands = keys.add_subparsers(title="commands", metavar="COMMAND", required=True)
    create_key = key_commands.add_parser(
        "create",
        help="create a tenant API key and print it once",
        description="Create an API key for a tenant (created if missing); prints the key once.",
    )
    create_key.add_argument("--tenant", required=True, help="tenant name")
    create_key.add_argument("--name", help="a label for the key")
    create_key.set_defaults(run=_create_key)
    rotate = key_commands.add_parser(
        "rotate-encryption",
        help="re-encrypt provider keys under the current ENCRYPTION_KEY",
        description=(
            "Re-encrypt every stored provider key that is not yet under ENCRYPTION_KEY, in one "
            "transaction. Older secrets are read with the keys in ENCRYPTION_KEY_PREVIOUS; if "
            "any secret decrypts with none of them, nothing is changed and the exit status is 2."
        ),
    )
    rotate.add_argument(
        "--dry-run", action="store_true", help="check every secret and report, change nothing"
    )
    rotate.set_defaults(run=_rotate_encryption)

    audit = commands.add_parser(
        "audit", help="the audit log", description="Check the hash-chained audit log."
    )
    audit_commands = audit.add_subparsers(title="commands", metavar="COMMAND", required=True)
    verify = audit_commands.add_parser(
        "verify",
        help="verify every organisation's audit chain",
        description=(
            "Recompute every audit row's hash and link. Exits 0 when the log is intact, 1 with "
            "the first broken row (edited, deleted, or newest rows removed)."
        ),
    )
    verify.set_defaults(run=_audit_verify)

    dlp = commands.add_parser(
        "dlp", help="data-loss prevention", description="Find secrets and personal data."
    )
    dlp_commands = dlp.add_subparsers(title="commands", metavar="COMMAND", required=True)
    scan = dlp_commands.add_parser(
        "scan",
        help="scan files or stdin for secrets, personal data and prompt injection",
        description=(
            "Scan files (or stdin when none or '-') with every built-in DLP detector. Text "
            "output: one line per finding (input:line:col detector category severity action "
            "masked-excerpt). --format json: one line per input with character offsets and "
            "never the matched value. Exits 1 when a finding is at or above --fail-on."
        ),
    )
    add_scan_arguments(scan)
    scan.set_defaults(run=_dlp_scan)

    demo = commands.add_parser(
        "demo-upstream",
        help="serve fake OpenAI and Anthropic APIs for offline trials",
        description=(
            "Serve fake OpenAI (/v1/chat/completions, /v1/embeddings, /v1/models) and Anthropic "
            "(/v1/messages) APIs with canned answers on 127.0.0.1. A model name ending in "
            "'-paced' pauses 10 ms after the first stream event, to show relays do not buffer."
        ),
    )
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=9000)
    demo.set_defaults(run=_demo_upstream)
    return parser


def _serve(settings: Settings, args: argparse.Namespace) -> None:
    import uvicorn

    from agentwatch.app import create_app, prepare_database

    overrides: dict[str, object] = {}
    if args.config is not None:
        overrides["config_path"] = args.config
    if args.host:
        overrides["host"] = args.host
    if args.port:
        overrides["port"] = args.port
    if args.workers is not None:
        if args.workers < 1:
            raise CommandError(f"--workers must be at least 1, got {args.workers}")
        overrides["workers"] = args.workers
    settings = settings.with_overrides(**overrides) if overrides else settings
    config: GatewayConfig | None = None
    if settings.config_path is not None:
        config = load_config(settings.config_path)
    if settings.generated_secrets:
        log.warning(
            "JWT_SECRET/ENCRYPTION_KEY are not set: using development secrets generated in %s. "
            "Set both, and AGENTWATCH_ENV=production, before deploying.",
            settings.data_dir / DEV_SECRETS_FILE,
        )
    if settings.admin_email and settings.admin_password:
        _check_admin_password(settings.admin_password, settings.admin_email)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        asyncio.run(prepare_database(settings, config))
    except (SQLAlchemyError, OSError) as exc:
        raise CommandError(f"cannot prepare the database: {_first_line(exc)}") from exc
    server_options: dict[str, object] = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        "access_log": False,
        "proxy_headers": False,
        "log_level": settings.log_level.lower(),
        "server_header": False,
    }
    if settings.workers > 1:
        _serve_workers(settings, server_options)
        return
    # Applied above: the server's start-up needs neither the file nor a second pass; it keeps
    # what lives only in memory (the `dlp:` policy).
    settings = settings.with_overrides(config_path=None)
    app = create_app(settings, config, database_ready=True)
    server = uvicorn.Server(uvicorn.Config(app, **server_options))  # type: ignore[arg-type]
    server.run()
    if not server.started:
        raise SystemExit(1)


def _serve_workers(settings: Settings, server_options: dict[str, object]) -> None:
    """uvicorn's worker processes, each building the app from the environment; Prometheus
    metrics go through files in the data directory, emptied here, so a scrape of any worker
    counts the calls of all of them."""
    import uvicorn

    metrics_dir = settings.data_dir / "prometheus-multiproc"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    # Inherited by the workers, which read both before building anything.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    if settings.config_path is not None:
        os.environ["AGENTWATCH_CONFIG"] = str(settings.config_path.resolve())
    uvicorn.run(
        "agentwatch.app:create_worker_app",
        factory=True,
        workers=settings.workers,
        **server_options,  # type: ignore[arg-type]
    )


def _db_upgrade(settings: Settings, _args: argparse.Namespace) -> None:
    async def upgrade() -> None:
        engine = create_engine(settings.database_url)
        try:
            await upgrade_database(engine)
        finally:
            await engine.dispose()
        print("database is at the latest revision", file=sys.stderr)

    asyncio.run(upgrade())


def _create_admin(settings: Settings, args: argparse.Namespace) -> None:
    _check_admin_password(args.password, args.email)

    async def create() -> None:
        engine = await _ready_engine(settings)
        try:
            async with session_factory(engine).begin() as session:
                org_id = await ensure_default_org(session)
                user = await create_admin(session, org_id, args.email, args.password)
                await _audit(session, user.org_id, "user.super_admin_set", f"user:{user.id}")
        finally:
            await engine.dispose()
        print(f"super admin {args.email} is ready", file=sys.stderr)

    asyncio.run(create())


def _create_key(settings: Settings, args: argparse.Namespace) -> None:
    key = new_tenant_key()

    async def create() -> None:
        engine = await _ready_engine(settings)
        try:
            async with session_factory(engine).begin() as session:
                org_id = await ensure_default_org(session)
                tenant = await session.scalar(
                    select(Tenant).where(Tenant.org_id == org_id, Tenant.name == args.tenant)
                )
                if tenant is None:
                    tenant = Tenant(org_id=org_id, name=args.tenant)
                    session.add(tenant)
                    await session.flush()
                    await _audit(session, org_id, "tenant.created", f"tenant:{tenant.id}")
                    print(f"created tenant {args.tenant}", file=sys.stderr)
                api_key = ApiKey(
                    tenant_id=tenant.id,
                    key_hash=hash_tenant_key(key),
                    prefix=key_prefix(key),
                    name=args.name,
                )
                session.add(api_key)
                await session.flush()
                await _audit(
                    session,
                    org_id,
                    "key.created",
                    f"key:{api_key.id}",
                    {"tenant_id": tenant.id, "prefix": api_key.prefix},
                )
        finally:
            await engine.dispose()

    asyncio.run(create())
    print(key)


def _rotate_encryption(settings: Settings, args: argparse.Namespace) -> None:
    keyring = Keyring.from_settings(settings)

    async def rotate() -> tuple[int, int]:
        engine = await _ready_engine(settings)
        try:
            async with session_factory(engine).begin() as session:
                stored = (
                    await session.execute(
                        select(
                            ProviderKey.id,
                            ProviderKey.encrypted_key,
                            Provider.name,
                            Provider.org_id,
                        )
                        .join(Provider, Provider.id == ProviderKey.provider_id)
                        .order_by(ProviderKey.id)
                    )
                ).all()
                # Every secret is decrypted before any is rewritten: one that cannot be read
                # stops the rotation with nothing changed.
                stale: list[tuple[int, str]] = []
                per_org: dict[int, int] = {}
                for key_id, blob, provider, org_id in stored:
                    try:
                        plaintext = decrypt_secret(blob, keyring)
                    except DecryptionError as exc:
                        raise CommandError(
                            f"provider key {key_id} (provider '{provider}'): {exc}; "
                            "nothing was re-encrypted"
                        ) from exc
                    if needs_rotation(blob, keyring):
                        stale.append((key_id, plaintext))
                        per_org[org_id] = per_org.get(org_id, 0) + 1
                if not args.dry_run:
                    for key_id, plaintext in stale:
                        await session.execute(
                            update(ProviderKey)
                            .where(ProviderKey.id == key_id)
                            .values(encrypted_key=encrypt_secret(plaintext, keyring))
                        )
                    for org_id, count in sorted(per_org.items()):
                        await _audit(
                            session,
                            org_id,
                            "provider_keys.reencrypted",
                            None,
                            {"count": count, "key_id": encryption_key_id(keyring.current)},
                        )
                return len(stale), len(stored)
        finally:
            await engine.dispose()

    changed, total = asyncio.run(rotate())
    verb = "would re-encrypt" if args.dry_run else "re-encrypted"
    print(f"{verb} {changed} of {total} provider keys", file=sys.stderr)


def _audit_verify(settings: Settings, _args: argparse.Namespace) -> None:
    from agentwatch.admin.audit import verify_audit_chains

    async def run() -> None:
        engine = await _ready_engine(settings)
        try:
            async with session_factory(engine)() as session:
                report = await verify_audit_chains(session)
        finally:
            await engine.dispose()
        if report.first_break is not None:
            print(f"agentwatch: {report.first_break.describe()}", file=sys.stderr)
            raise SystemExit(1)
        print(f"verified {report.rows} audit rows in {report.chains} chains: intact")

    asyncio.run(run())


async def _audit(
    session: AsyncSession,
    org_id: int,
    action: str,
    target: str | None,
    details: dict[str, object] | None = None,
) -> None:
    """Operator commands leave the same trail as the admin API, with the OS user as actor."""
    await append_audit(
        session,
        AuditEvent(
            org_id=org_id,
            actor=f"cli:{getpass.getuser()}",
            action=action,
            target=target,
            details=details,
        ),
    )


def _check_admin_password(password: str, email: str) -> None:
    try:
        check_password(password, email=email)
    except PasswordRejected as exc:
        raise CommandError(str(exc)) from exc


def _dlp_scan(_settings: Settings, args: argparse.Namespace) -> None:
    raise SystemExit(run_scan(args))


def _demo_upstream(_settings: Settings, args: argparse.Namespace) -> None:
    from agentwatch.demo_upstream import serve_forever

    serve_forever(args.host, args.port)


async def _ready_engine(settings: Settings) -> AsyncEngine:
    engine = create_engine(settings.database_url)
    await upgrade_database(engine)
    return engine


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
