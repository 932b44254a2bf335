"""The `clickagg` command: mint links, run the capture service, set up topics and tables, load."""

from __future__ import annotations

import sys

import typer

app = typer.Typer(
    help="ClickAgg: ad click capture, aggregation and reconciliation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(2)


@app.command()
def mint(
    advertiser: str = typer.Option(..., "--advertiser", "-a", help="Advertiser id"),
    campaign: str = typer.Option(..., "--campaign", "-c", help="Campaign id"),
    ad: str = typer.Option(..., "--ad", help="Ad id"),
    landing: str = typer.Option(..., "--landing", "-l", help="Landing URL (http/https)"),
    impression: str = typer.Option(
        None, "--impression", "-i", help="Impression id (default: a new random one)"
    ),
    publisher: str = typer.Option("direct", "--publisher", "-p", help="Publisher id"),
    ttl: int = typer.Option(None, "--ttl", help="Lifetime in seconds (default from settings)"),
    key_id: str = typer.Option(None, "--key-id", help="Signing key id (default: the first key)"),
    token_only: bool = typer.Option(False, "--token-only", help="Print the token, not the URL"),
) -> None:
    """Mint a signed click URL for one impression (what the ad server does per impression)."""
    import uuid

    from clickagg_platform.settings import get_settings
    from clickagg_platform.tokens import click_url, mint_token

    s = get_settings()
    try:
        token = mint_token(
            s.keyring(),
            key_id or s.active_key_id,
            impression_id=impression or uuid.uuid4().hex,
            advertiser_id=advertiser,
            campaign_id=campaign,
            ad_id=ad,
            landing_url=landing,
            publisher_id=publisher,
            ttl_s=ttl if ttl is not None else s.token_ttl_s,
        )
    except ValueError as err:
        _fail(str(err))
    typer.echo(token if token_only else click_url(s.public_base_url, token))


@app.command()
def capture(
    host: str = typer.Option(None, help="Bind address (default CLICKAGG_CAPTURE_HOST)"),
    port: int = typer.Option(None, help="Port (default CLICKAGG_CAPTURE_PORT)"),
    workers: int = typer.Option(1, help="Processes; each owns its own spool slot"),
    log_level: str = typer.Option("warning", help="uvicorn log level"),
) -> None:
    """Run the capture service (GET /c/{token} -> durable click -> 302)."""
    from clickagg_platform.settings import get_settings

    s = get_settings()
    _serve(
        "clickagg_platform.capture:create_app",
        host or s.capture_host,
        port or s.capture_port,
        workers,
        log_level,
        backlog=4096,
    )


def _serve(factory: str, host: str, port: int, workers: int, log_level: str, **extra) -> None:
    """uvicorn with the platform's choices: uvloop + httptools, no access log, and no proxy
    header rewriting (capture trusts X-Forwarded-For itself, only from trusted peers)."""
    import uvicorn

    uvicorn.run(
        factory,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        proxy_headers=False,
        log_level=log_level,
        timeout_graceful_shutdown=15,
        **extra,
    )


@app.command()
def migrate() -> None:
    """Apply ClickHouse schema migrations (idempotent)."""
    from clickagg_platform import clickhouse
    from clickagg_platform.settings import get_settings

    s = get_settings()
    try:
        applied = clickhouse.migrate(s)
    except Exception as err:  # noqa: BLE001 - turned into a CLI message
        _fail(f"ClickHouse at {s.clickhouse_host}:{s.clickhouse_port}: {err}")
    typer.echo(f"database {s.clickhouse_database}: {len(applied)} migration(s) applied")


@app.command()
def topics(
    wait: float = typer.Option(60.0, help="Seconds to wait for the broker"),
) -> None:
    """Create the clicks topic with the configured partitions (idempotent)."""
    from clickagg_platform import kafka_admin
    from clickagg_platform.settings import get_settings

    s = get_settings()
    try:
        kafka_admin.wait_for_broker(s, timeout_s=wait)
        created = kafka_admin.ensure_topic(s)
    except Exception as err:  # noqa: BLE001 - turned into a CLI message
        _fail(str(err))
    state = "created" if created else "exists"
    typer.echo(f"topic {s.clicks_topic} ({s.clicks_partitions} partitions): {state}")


@app.command()
def api(
    host: str = typer.Option(None, help="Bind address (default CLICKAGG_API_HOST)"),
    port: int = typer.Option(None, help="Port (default CLICKAGG_API_PORT)"),
    workers: int = typer.Option(1, help="Processes"),
) -> None:
    """Run the query API and dashboard (OpenAPI at /docs)."""
    from clickagg_platform.settings import get_settings

    s = get_settings()
    _serve(
        "clickagg_platform.api.app:create_app",
        host or s.api_host,
        port or s.api_port,
        workers,
        "warning",
    )


@app.command("dagster-metrics")
def dagster_metrics(
    host: str = typer.Option("127.0.0.1", help="Bind address"),
    port: int = typer.Option(None, help="Port (default CLICKAGG_DAGSTER_METRICS_PORT)"),
) -> None:
    """Serve Prometheus metrics of the Dagster instance in DAGSTER_HOME (runs, materialisations,
    asset checks) at /metrics."""
    import os

    from clickagg_platform.settings import get_settings

    if not os.environ.get("DAGSTER_HOME"):
        _fail("DAGSTER_HOME is not set: point it at the Dagster instance to export")
    from assets.exporter import serve

    port = port or get_settings().dagster_metrics_port
    typer.echo(f"Dagster metrics on http://{host}:{port}/metrics")
    serve(host, port)


@app.command("clickhouse-metrics")
def clickhouse_metrics(
    host: str = typer.Option("127.0.0.1", help="Bind address"),
    port: int = typer.Option(None, help="Port (default CLICKAGG_CLICKHOUSE_METRICS_PORT)"),
) -> None:
    """Serve ClickHouse's system.metrics / events / asynchronous_metrics at /metrics."""
    from clickagg_platform.clickhouse_metrics import serve
    from clickagg_platform.settings import get_settings

    s = get_settings()
    port = port or s.clickhouse_metrics_port
    typer.echo(f"ClickHouse metrics on http://{host}:{port}/metrics")
    serve(host, port, s)


@app.command("alert-log")
def alert_log(
    host: str = typer.Option("127.0.0.1", help="Bind address"),
    port: int = typer.Option(None, help="Port (default CLICKAGG_ALERT_LOG_PORT)"),
    path: str = typer.Option(None, help="JSON-lines file (default <local dir>/alerts.log)"),
) -> None:
    """Alertmanager webhook receiver: append each delivered alert as a JSON line to a file."""
    from pathlib import Path

    from clickagg_platform.alert_log import make_server
    from clickagg_platform.settings import get_settings

    s = get_settings()
    out = Path(path) if path else s.local_dir / "alerts.log"
    server = make_server(host, port or s.alert_log_port, out)
    typer.echo(f"alert log receiver on http://{host}:{server.server_port}/ -> {out}")
    server.serve_forever()


apikey_app = typer.Typer(help="Create, list and revoke advertiser API keys.", no_args_is_help=True)
app.add_typer(apikey_app, name="apikey")


def _key_store():
    from clickagg_platform import clickhouse
    from clickagg_platform.api.keys import KeyStore
    from clickagg_platform.settings import get_settings

    s = get_settings()
    return KeyStore(lambda: clickhouse.client(s), s.clickhouse_database)


@apikey_app.command("create")
def apikey_create(
    advertiser: str = typer.Option(..., "--advertiser", "-a", help="Advertiser id"),
    label: str = typer.Option("", help="A note to recognise the key by"),
) -> None:
    """Create a key for an advertiser; the key is printed once and stored only hashed."""
    try:
        full, key_id = _key_store().create(advertiser, label)
    except ValueError as err:
        _fail(str(err))
    typer.echo(full)
    typer.secho(
        f"key id {key_id} for advertiser {advertiser}: store it now, it is not shown again",
        err=True,
    )


@apikey_app.command("revoke")
def apikey_revoke(key_id: str = typer.Argument(..., help="Key id (the part after ck_)")) -> None:
    """Revoke a key (effective within seconds)."""
    if not _key_store().revoke(key_id):
        _fail(f"no key with id {key_id!r}")
    typer.echo(f"revoked {key_id}")


@apikey_app.command("list")
def apikey_list(
    advertiser: str = typer.Option(None, "--advertiser", "-a", help="Only this advertiser"),
) -> None:
    """List keys (ids and state, never secrets)."""
    from rich.console import Console
    from rich.table import Table

    table = Table("key id", "advertiser", "label", "created", "state")
    for k in _key_store().list(advertiser):
        table.add_row(
            k["key_id"],
            k["advertiser_id"],
            k["label"],
            str(k["created_at"]),
            "revoked" if k["revoked"] else "active",
        )
    Console().print(table)


@app.command()
def retention(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would be dropped"),
    hot_days: int = typer.Option(None, help="Override the hot table's retention (days)"),
) -> None:
    """Drop ClickHouse partitions past their retention (18.16 has no TTL); billing is kept.
    Also drops first-seen index hours older than the dedup horizon + 49 h."""
    from datetime import UTC, datetime

    from clickagg_platform import clickhouse
    from clickagg_platform.retention import DEFAULT_POLICY, apply_retention
    from clickagg_platform.settings import get_settings

    if hot_days is not None and hot_days < 1:
        _fail("--hot-days must be at least 1")
    policy = dict(DEFAULT_POLICY)
    if hot_days is not None:
        policy["hot_clicks"] = hot_days
    s = get_settings()
    c = clickhouse.client(s)
    try:
        drops = apply_retention(
            c, s.clickhouse_database, datetime.now(UTC).date(), policy, dry_run=dry_run
        )
    finally:
        c.disconnect()
    verb = "would drop" if dry_run else "dropped"
    for d in drops:
        typer.echo(f"{verb} {d.table} partition {d.partition_id} ({d.day})")
    typer.echo(f"{len(drops)} partition(s) {verb}")
    from clickagg_platform import first_seen
    from streaming.config import StreamSettings

    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    hours = first_seen.prune(
        s.lake_root, s.clicks_topic, now_ms, StreamSettings().horizon_ms, s, dry_run=dry_run
    )
    for h in hours:
        typer.echo(
            f"{verb} first-seen index hour {datetime.fromtimestamp(h / 1000, UTC):%Y-%m-%dT%H}"
        )
    typer.echo(f"{len(hours)} first-seen index hour(s) {verb}")


@app.command()
def config() -> None:
    """Show the effective settings (environment CLICKAGG_*), secrets masked."""
    from pydantic import SecretStr
    from rich.console import Console
    from rich.table import Table

    from clickagg_platform.settings import Settings

    try:
        s = Settings()
    except Exception as err:  # noqa: BLE001 - a bad variable gets a clear message
        _fail(f"invalid settings: {err}")
    table = Table("variable", "value", "meaning")
    secret = {"clickhouse_password", "api_clickhouse_password", "hash_salt"}
    for name, field in Settings.model_fields.items():
        value = getattr(s, name)
        if isinstance(value, SecretStr):  # Kafka key and SASL passwords
            value = "***"
        elif name == "signing_keys":
            value = ",".join(f"{kid}:***" for kid in s.keyring())
        elif name in secret and value:
            value = "***"
        table.add_row(f"CLICKAGG_{name.upper()}", str(value), field.description or "")
    Console().print(table)


def _register_submodules() -> None:
    """Commands that live in their own modules (imported lazily inside each command)."""
    from clickagg_platform.cli_batch import campaigns_import, reconcile_hour
    from clickagg_platform.cli_load import load
    from clickagg_platform.cli_migrate import placement, rekey_topic

    app.command("load")(load)
    app.command("rekey-topic")(rekey_topic)
    app.command("placement")(placement)
    campaigns = typer.Typer(
        help="The campaign catalog (CPCs used by billing).", no_args_is_help=True
    )
    campaigns.command("import")(campaigns_import)
    app.add_typer(campaigns, name="campaigns")
    batch = typer.Typer(
        help="The batch (truth) path, outside the Dagster UI.", no_args_is_help=True
    )
    batch.command("reconcile")(reconcile_hour)
    app.add_typer(batch, name="batch")


_register_submodules()


def main() -> None:
    sys.exit(app())


if __name__ == "__main__":
    main()
