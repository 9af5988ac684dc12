"""The loopback provider of llm_stub.py, replying with a random mix of faults drawn from a fixed seed."""

import collections
import json
import random

from support.llm_stub import DEEP_REPLY, TRIAGE_REPLY, LLMStub, Reply, completion, ok, rate_limited, server_error

# Share of each kind of reply. "ok" takes what the others leave.
FAULT_SHARES = {
    "rate_limited": 0.12,   # 429 with Retry-After: 1
    "server_error": 0.12,   # 500 with the documented error body
    "timeout": 0.08,        # a valid reply, sent after the client's read timeout
    "garbage": 0.08,        # 200 with a body that is not JSON at all
    "truncated": 0.08,      # 200 with a chat.completion body cut in the middle
}


class ChaosLLMStub(LLMStub):
    """Each call draws a reply: ok, 429, 500, a timeout, garbage or truncated JSON."""

    def __init__(self, seed: int = 20261204, timeout_delay: float = 2.0, **kwargs):
        super().__init__(**kwargs)
        self.random = random.Random(seed)
        self.timeout_delay = timeout_delay
        self.served = collections.Counter()

    def next_reply(self, body) -> Reply:
        system = (body.get("messages") or [{}])[0].get("content", "")
        content = DEEP_REPLY if "root_cause" in system else TRIAGE_REPLY
        with self._lock:
            draw = self.random.random()
            kind = "ok"
            for name, share in FAULT_SHARES.items():
                if draw < share:
                    kind = name
                    break
                draw -= share
            self.served[kind] += 1
        if kind == "rate_limited":
            return rate_limited(retry_after="1")
        if kind == "server_error":
            return server_error()
        if kind == "timeout":
            return Reply(200, completion(content), delay=self.timeout_delay)
        if kind == "garbage":
            return Reply(200, raw=b"<html><body>502 Bad Gateway</body></html>")
        if kind == "truncated":
            whole = json.dumps(completion(content)).encode()
            return Reply(200, raw=whole[: len(whole) // 2])
        return ok(content)
