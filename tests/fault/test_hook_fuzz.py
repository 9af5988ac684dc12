"""6. Ten thousand fuzzed events through before_send: it never raises and returns the very object it got."""

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from config import load_settings
from tasks import hook

pytestmark = pytest.mark.slow

EVENT_KEYS = ("event_id", "level", "logger", "platform", "message", "logentry", "exception", "request",
              "transaction", "release", "environment", "tags", "fingerprint", "timestamp", "extra", "type",
              "breadcrumbs", "contexts", "user")
EXCEPTION_KEYS = ("type", "value", "module", "mechanism", "stacktrace")
FRAME_KEYS = ("module", "function", "filename", "lineno", "in_app", "vars")

surrogates = st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=5)
huge = st.integers(min_value=0, max_value=100_000).map(lambda size: "\u00e9" * size)
leaf = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=40), st.binary(max_size=40),
    surrogates, huge,
)
anything = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.text(max_size=8), st.sampled_from(EVENT_KEYS + EXCEPTION_KEYS)), inner,
                        max_size=3),
    ),
    max_leaves=6,
)
frame = st.dictionaries(st.sampled_from(FRAME_KEYS), anything, max_size=4)
exception = st.one_of(
    anything,
    st.dictionaries(st.sampled_from(EXCEPTION_KEYS), st.one_of(
        anything, st.fixed_dictionaries({"frames": st.one_of(anything, st.lists(frame, max_size=4))}),
    ), max_size=4),
)
events = st.dictionaries(
    st.sampled_from(EVENT_KEYS),
    st.one_of(anything, st.fixed_dictionaries({"values": st.one_of(anything, st.lists(exception, max_size=4))}),
              st.lists(exception, max_size=2)),
    max_size=8,
)


def add_cycle(event: dict, where: str) -> None:
    """Make the event reach itself, the way no serializer would allow."""
    if where == "self":
        event["extra"] = event
    elif where == "list":
        loop = [1]
        loop.append(loop)
        event["tags"] = {"loop": loop}
    elif where == "exception":
        values = [{"type": "LoopError", "value": event}]
        values[0]["stacktrace"] = {"frames": values}
        event["exception"] = {"values": values}


@pytest.fixture(scope="module")
def producer(tmp_path_factory):
    delivered = []
    settings_ = load_settings({"REDIS_URL": "redis://127.0.0.1:1/0", "HOOK_QUEUE_SIZE": "20000",
                               "SPOOL_DIR": str(tmp_path_factory.mktemp("spool"))})
    # Errors on the request thread are counted per process, and earlier tests in this process may
    # have caused some on purpose: only those counted from here on belong to this test.
    errors_before = hook._module_counters["hook_errors"]
    installed = hook.configure(settings_, send=delivered.append)
    installed.delivered = delivered
    installed.errors_before = errors_before
    yield installed
    hook._producer = None


@settings(max_examples=10_000, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(event=events, cycle=st.sampled_from([None, None, "self", "list", "exception"]))
def test_before_send_never_raises_and_returns_its_argument(producer, event, cycle):
    if cycle:
        add_cycle(event, cycle)
    assert hook.before_send(event, {}) is event


def test_fuzzed_events_were_all_handled(producer):
    """Runs after the fuzz above: every event it queued was built and delivered without an error."""
    assert producer.flush(60)
    counts = hook.hook_counters()
    assert counts["queued"] >= 1000
    assert counts["hook_errors"] - producer.errors_before == 0
    assert counts["sent"] + counts["dropped_too_large"] == counts["queued"] + counts["overflowed"]
    assert all(counts[name] == 0 for name in counts if name.startswith("dropped_"))
