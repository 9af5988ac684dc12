"""`errortriage eval` and `errortriage costs`: how good the classification is, and what it costs."""

import collections
from pathlib import Path
from typing import Optional

import click

from classifier import rules
from classifier.context import extract_context
from classifier.dataset import read_records, record_to_event
from classifier.errors import LLMError
from classifier.llm import LLMClient
from classifier.schema import Category, Severity
from classifier.scrub import scrub_value
from config import Settings


class Evaluation:
    """Expected and predicted labels of a dataset, with the provider calls it took."""

    def __init__(self):
        self.pairs = []  # (record id, expected category, predicted, expected severity, predicted)
        self.calls: list = []
        self.failures = 0

    def add(self, record_id, expected_category, category, expected_severity, severity) -> None:
        self.pairs.append((record_id, expected_category, category, expected_severity, severity))

    @property
    def category_accuracy(self) -> float:
        return sum(p[1] == p[2] for p in self.pairs) / max(1, len(self.pairs))

    @property
    def severity_exact(self) -> float:
        return sum(p[3] == p[4] for p in self.pairs) / max(1, len(self.pairs))

    @property
    def severity_within_one(self) -> float:
        return sum(abs(Severity(p[3]).rank - Severity(p[4]).rank) <= 1 for p in self.pairs) / max(1, len(self.pairs))

    def precision_recall(self) -> dict:
        """Return {category: (precision, recall, support)}."""
        result = {}
        for category in Category:
            name = category.value
            predicted = [p for p in self.pairs if p[2] == name]
            actual = [p for p in self.pairs if p[1] == name]
            hits = sum(p[1] == name for p in predicted)
            precision = hits / len(predicted) if predicted else 0.0
            recall = hits / len(actual) if actual else 0.0
            result[name] = (precision, recall, len(actual))
        return result

    def confusion(self) -> dict:
        return collections.Counter((p[1], p[2]) for p in self.pairs)


def run_eval(path: Path, tier: str, settings: Settings) -> Evaluation:
    """Classify every record of a labelled JSON Lines file through the live extraction path."""
    evaluation = Evaluation()
    client: Optional[LLMClient] = None
    if tier == "llm":
        if not settings.llm_configured:
            raise click.ClickException("--classifier llm needs LLM_BASE_URL and LLM_API_KEY; set them or use --classifier rules")
        client = LLMClient(settings.llm_base_url, settings.llm_api_key, settings.llm_timeout_seconds,
                           settings.llm_max_tokens, observer=evaluation.calls.append)
    try:
        records = list(read_records(path))
    except (OSError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    for record in records:
        context = extract_context(record_to_event(record))
        if client is None:
            result = rules.classify(context)
        else:
            try:
                result = client.classify(scrub_value(context), settings.bulk_model)
            except LLMError as error:
                evaluation.failures += 1
                click.echo(f"{record.get('id')}: provider failed ({error}); scored with the rules", err=True)
                result = rules.classify(context, reason=str(error))
        evaluation.add(record.get("id"), record["label_category"], result.category.value,
                       record["label_severity"], result.severity.value)
    return evaluation


def print_report(evaluation: Evaluation, settings: Settings, echo=click.echo) -> None:
    total = len(evaluation.pairs)
    echo(f"records: {total}")
    echo(f"category accuracy:          {evaluation.category_accuracy:.1%}")
    echo(f"severity exact:             {evaluation.severity_exact:.1%}")
    echo(f"severity within one level:  {evaluation.severity_within_one:.1%}")
    echo("")
    echo(f"{'category':<16} {'precision':>9} {'recall':>7} {'support':>8}")
    for name, (precision, recall, support) in evaluation.precision_recall().items():
        echo(f"{name:<16} {precision:>9.2f} {recall:>7.2f} {support:>8}")
    echo("")
    short = {category.value: category.value[:5] for category in Category}
    echo("confusion (rows: expected, columns: predicted)")
    echo(" " * 16 + " ".join(f"{short[c.value]:>6}" for c in Category))
    confusion = evaluation.confusion()
    for expected in Category:
        cells = " ".join(f"{confusion.get((expected.value, predicted.value), 0):>6}" for predicted in Category)
        echo(f"{expected.value:<16}{cells}")
    misses = [p for p in evaluation.pairs if p[1] != p[2]]
    if misses:
        echo("")
        echo("category misses: " + ", ".join(f"{p[0]} ({p[1]} -> {p[2]})" for p in misses))
    if evaluation.calls:
        prompt = sum(call.usage.prompt_tokens for call in evaluation.calls)
        completion = sum(call.usage.completion_tokens for call in evaluation.calls)
        cost = sum(settings.cost_usd(call.model, call.usage.prompt_tokens, call.usage.completion_tokens)
                   for call in evaluation.calls)
        echo("")
        echo(f"provider calls: {len(evaluation.calls)}, prompt tokens: {prompt}, completion tokens: {completion}, "
             f"cost: ${cost:.4f}, failures: {evaluation.failures}")


def print_costs(store, days: int, echo=click.echo) -> None:
    """Print spend by day and model for the last `days` days, and the month's projection."""
    rows = store.fetchall("costs_by_day", days=days)
    if not rows:
        echo(f"no provider calls recorded in the last {days} days (the rules tier costs nothing)")
        return
    echo(f"{'day':<12} {'model':<24} {'calls':>7} {'prompt tok':>11} {'compl tok':>10} {'cost USD':>10}")
    for row in rows:
        echo(f"{row['day'].isoformat():<12} {row['model']:<24} {row['calls']:>7} {row['prompt_tokens']:>11} "
             f"{row['completion_tokens']:>10} {float(row['cost_usd']):>10.4f}")
    month = store.fetchone("spend_this_month")
    spent = float(month["cost_usd"])
    day, days_in_month = float(month["day_of_month"]), float(month["days_in_month"])
    projection = spent / day * days_in_month if day else 0.0
    echo("")
    echo(f"this month so far: ${spent:.4f}; projected for the whole month at this pace: ${projection:.2f}")
