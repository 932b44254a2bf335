"""`clickagg rekey-topic OLD NEW`: the cut-over from the old CRC-32 placement to murmur2, and
`clickagg placement TOPIC`, which tells how a topic was written (registered by `cli.py`; the
steps around them are in docs/operations.md)."""

from __future__ import annotations

import typer


def rekey_topic(
    source: str = typer.Argument(..., help="Topic written with the old CRC-32 placement"),
    target: str = typer.Argument(..., help="New topic (created if missing; must be unwritten)"),
    fence: bool = typer.Option(
        True, "--fence/--no-fence", help="Make the old topic refuse writes first (default)"
    ),
    reset_hot: bool = typer.Option(
        False,
        "--reset-hot",
        help="Then empty the hot table (only once the stream worker on the old topic is stopped)",
    ),
) -> None:
    """Fence the old topic, copy it into NEW placed by murmur2 (timestamp order), verify counts."""
    from rich.progress import Progress

    from clickagg_platform import rekey
    from clickagg_platform.settings import get_settings

    s = get_settings()
    with Progress(transient=True) as bar:
        task = bar.add_task(f"{source} -> {target}", total=None)
        try:
            result = rekey.rekey_topic(
                s,
                source,
                target,
                fence=fence,
                progress=lambda n, t: bar.update(task, completed=n, total=t),
            )
        except rekey.RekeyError as err:
            typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
            raise typer.Exit(1) from err
    typer.echo(
        f"copied {result.copied} records in {result.rounds} round(s); "
        f"old partitions {dict(sorted(result.by_source.items()))} -> "
        f"new partitions {dict(sorted(result.by_target.items()))}"
        + (f"; {source} is fenced (max.message.bytes=1)" if fence else "")
    )
    if reset_hot:
        rekey.reset_hot(s)
        typer.echo(
            f"hot table {s.clickhouse_database}.hot_clicks emptied: start the stream on {target}"
        )


def placement(
    topic: str = typer.Argument(..., help="Topic to inspect"),
    sample: int = typer.Option(1000, help="Last records read per partition"),
) -> None:
    """Which partitioner wrote TOPIC (murmur2, crc32 or mixed), from its latest records."""
    from clickagg_platform import rekey
    from clickagg_platform.settings import get_settings

    try:
        found = rekey.placement(get_settings(), topic, sample)
    except rekey.RekeyError as err:
        typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from err
    typer.echo(
        f"{topic}: {found.verdict} ({found.sampled} keyed records: {found.murmur2} on their "
        f"murmur2 partition, {found.crc32} on their CRC-32 partition)"
    )
    if found.verdict in ("crc32", "mixed"):
        typer.echo("move it with `clickagg rekey-topic` (docs/operations.md)")
