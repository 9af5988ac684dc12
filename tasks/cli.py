"""The `errortriage` command: migrate, ingest, list, dead-letters, settings, costs, eval, demo and more."""

import json
import logging
import shutil
import sys
from pathlib import Path

import click

from classifier.context import extract_context
from config import ConfigError, Settings, load_settings
from config.errors import ErrortriageError

logger = logging.getLogger(__name__)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


def _store(settings: Settings):
    from tasks.store import Store

    if not settings.database_url:
        raise click.ClickException("DATABASE_URL is not set; set it to postgresql://user@host:5432/dbname")
    return Store(settings.database_url)


def read_events(path: Path) -> list:
    """Return the events in a file: one JSON object, or one per line (JSON Lines)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        document = None
    if isinstance(document, dict):
        return [document]
    if isinstance(document, list):
        raise ValueError(f"{path}: top level is a JSON array; write one event object per file or per line")
    events = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not valid JSON ({error.msg}); fix the line or remove it") from None
    return events


def ingest_files(paths: list, settings: Settings, echo=None) -> tuple:
    """Publish each event of each file through the hook's path; return (event ids, failed files)."""
    from tasks.hook import Producer

    producer = Producer(settings, source="ingest")
    event_ids, failures = [], 0
    for path in paths:
        try:
            events = read_events(Path(path))
        except (OSError, ValueError) as error:
            failures += 1
            (echo or click.echo)(f"skipped {path}: {error}", err=True)
            continue
        for event in events:
            event_ids.append(producer.publish(extract_context(event)))
    return event_ids, failures


def print_table(rows: list, echo=click.echo) -> None:
    """Print events as a fixed-width table that fits a terminal."""
    width = max(100, shutil.get_terminal_size((140, 20)).columns)
    header = f"{'event':<10} {'category':<15} {'severity':<12} {'classifier':<17} summary"
    echo(header)
    echo("-" * min(width, 160))
    room = max(30, min(width, 160) - len(header) + len("summary"))
    for row in rows:
        summary = (row.get("summary") or "(unclassified)").replace("\n", " ")
        if len(summary) > room:
            summary = summary[: room - 3] + "..."
        echo(
            f"{row['event_id'][:8]:<10} {row.get('category') or '-':<15} {row.get('severity') or '-':<12} "
            f"{(row.get('classifier') or '-')[:17]:<17} {summary}"
        )
        if row.get("root_cause"):
            echo(f"{'':<10} root cause: {row['root_cause']}")
            echo(f"{'':<10} action: {row['recommended_action']}")


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level to stderr.")
def main(verbose):
    """errortriage: classify the errors your apps send to Sentry, with Celery workers and an LLM."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@main.command()
def migrate():
    """Create or update the Postgres schema in DATABASE_URL."""
    store = _store(_settings())
    try:
        applied = store.migrate()
    except ErrortriageError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"applied: {', '.join(applied)}" if applied else "schema is up to date")


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def ingest(files):
    """Queue Sentry event files (one event per file, or JSON Lines) for triage via REDIS_URL."""
    settings = _settings()
    try:
        event_ids, failures = ingest_files(list(files), settings)
    except ErrortriageError as error:
        raise click.ClickException(str(error)) from None
    except Exception as error:  # kombu raises several types when the broker is unreachable
        raise click.ClickException(f"cannot publish to the broker: {type(error).__name__}: {error}") from None
    click.echo(f"queued {len(event_ids)} events from {len(files) - failures} files")
    if failures:
        sys.exit(1)


@main.command(name="list")
@click.option("-n", "--limit", default=20, show_default=True, help="Number of most recent events to show.")
def list_events(limit):
    """Show the most recent events with their classification."""
    store = _store(_settings())
    try:
        rows = store.fetchall("recent_events", limit=limit)
    except ErrortriageError as error:
        raise click.ClickException(str(error)) from None
    print_table(rows)


@main.command(name="dead-letters")
@click.option("-n", "--limit", default=20, show_default=True, help="Number of most recent dead letters to show.")
@click.option("--payload", "show_payload", is_flag=True, help="Also print the first 500 characters of each payload.")
@click.option("--check", is_flag=True, help="Exit with status 1 when the table is not empty, for cron or a health check.")
def dead_letters(limit, show_payload, check):
    """Show the payloads the workers could not process, newest first, with the error of each."""
    store = _store(_settings())
    try:
        total = store.fetchone("count_dead_letters")["total"]
        rows = store.fetchall("recent_dead_letters", limit=limit)
    except ErrortriageError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"{total} dead letters")
    for row in rows:
        error = row["error"].replace("\n", " ")
        click.echo(f"#{row['id']} {row['received_at']:%Y-%m-%d %H:%M:%S%z} task_id={row['task_id']} error={error[:300]}")
        if show_payload:
            click.echo(f"    payload: {row['payload'][:500]}")
    if check and total:
        sys.exit(1)


@main.command()
def settings():
    """Print the settings in effect, with secrets masked."""
    for key, value in _settings().describe().items():
        click.echo(f"{key} = {value}")


@main.command(name="eval")
@click.argument("dataset", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--classifier", "tier", type=click.Choice(["rules", "llm"]), default="rules", show_default=True,
              help="Tier to evaluate: the rules, or the configured provider with BULK_MODEL.")
def evaluate(dataset, tier):
    """Score classification on labelled error reports (JSON Lines with label_category and label_severity)."""
    from tasks.evaluate import print_report, run_eval

    settings = _settings()
    print_report(run_eval(dataset, tier, settings), settings)


@main.command()
@click.option("--days", default=30, show_default=True, help="Number of days to show.")
def costs(days):
    """Show provider spend by day and model, and the month's projection."""
    from tasks.evaluate import print_costs

    store = _store(_settings())
    try:
        print_costs(store, days)
    except ErrortriageError as error:
        raise click.ClickException(str(error)) from None


@main.command()
@click.option("--state-dir", default=".errortriage/demo", show_default=True, type=click.Path(path_type=Path),
              help="Folder for embedded servers' data and process logs.")
@click.option("--timeout", default=180.0, show_default=True, help="Seconds to wait for every event to be classified.")
def demo(state_dir, timeout):
    """Run an instrumented Flask app, the workers and beat, and show its errors classified."""
    from tasks.demo import run_demo

    logging.getLogger().setLevel(logging.WARNING)
    try:
        code = run_demo(state_dir.resolve(), click.echo, timeout)
    except ErrortriageError as error:
        raise click.ClickException(str(error)) from None
    sys.exit(code)


@main.command(name="notify-test")
@click.argument("channel", type=click.Choice(["slack", "pagerduty"]))
def notify_test(channel):
    """Send a test message to CHANNEL (slack or pagerduty) with the configured webhook or routing key."""
    settings = _settings()
    from tasks.notify import DeliveryError, send_test_message

    try:
        click.echo(send_test_message(channel, settings))
    except (DeliveryError, ValueError) as error:
        raise click.ClickException(str(error)) from None


@main.command(name="replay-spool")
@click.option("--spool-dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Spool folder to replay; default SPOOL_DIR.")
def replay_spool_command(spool_dir):
    """Send the events the hook spooled while the broker was down, oldest first, via REDIS_URL."""
    from tasks.hook import replay_spool

    settings = _settings()
    folder = spool_dir or Path(settings.spool_dir)
    try:
        result, left = replay_spool(settings, folder)
    except ErrortriageError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"replayed {result.sent} events from {folder}; {left} left")
    if result.quarantined:
        click.echo(f"{result.quarantined} files could not be sent and were renamed to *.bad", err=True)
    if result.busy:
        raise click.ClickException("another process is replaying this spool; run the command again later")
    if result.error is not None:
        raise click.ClickException(f"the broker failed: {type(result.error).__name__}: {result.error}")


if __name__ == "__main__":
    main()
