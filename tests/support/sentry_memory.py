"""A sentry-sdk transport that keeps events in memory, so tests see what Sentry would receive."""

import threading

from sentry_sdk.transport import Transport


class MemoryTransport(Transport):
    """Collects the events of every envelope; never touches the network."""

    events: list = []
    lock = threading.Lock()

    def capture_envelope(self, envelope):
        event = envelope.get_event()
        if event is not None:
            with MemoryTransport.lock:
                MemoryTransport.events.append(event)

    @classmethod
    def take(cls) -> list:
        """Return the events captured so far and forget them."""
        with cls.lock:
            events, cls.events[:] = list(cls.events), []
        return events
