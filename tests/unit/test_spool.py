"""The spool on its own: atomic files, order, the cap, replay, quarantine and the replay lock."""

import fcntl
import json
import multiprocessing
import os
import time

import pytest

from tasks.spool import LOCK_NAME, PermanentSendError, Spool


def payload(number: int, size: int = 0) -> dict:
    return {"v": 1, "event_id": f"{number:032x}", "context": {"exceptions": [], "pad": "x" * size}}


def test_write_then_replay_in_order(tmp_path):
    spool = Spool(tmp_path / "spool", 10_000_000)
    for number in range(50):
        assert spool.write(payload(number))

    sent = []
    result = spool.replay(sent.append)

    assert [item["event_id"] for item in sent] == [f"{number:032x}" for number in range(50)]
    assert result.sent == 50
    assert result.empty
    assert result.error is None
    assert spool.pending() == []


def test_files_are_whole_and_private(tmp_path):
    spool = Spool(tmp_path, 10_000_000)
    spool.write(payload(1, size=5000))

    [path] = spool.pending()
    assert json.loads(path.read_bytes()) == payload(1, size=5000)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


def test_temporary_files_ignored_and_cleaned(tmp_path):
    spool = Spool(tmp_path, 10_000_000)
    fresh = tmp_path / ".00000000000000000001-1-00000000.json.tmp"
    stale = tmp_path / ".00000000000000000002-1-00000001.json.tmp"
    fresh.write_text("{half")
    stale.write_text("{half")
    old = time.time() - 3600
    os.utime(stale, (old, old))

    assert spool.pending() == []
    assert spool.size_bytes() == 0
    assert fresh.exists()
    assert not stale.exists()


def test_cap_drops_the_newest_and_keeps_the_oldest(tmp_path):
    one = len(json.dumps(payload(0, size=900), separators=(",", ":")))
    spool = Spool(tmp_path, one * 3)

    results = [spool.write(payload(number, size=900)) for number in range(5)]

    assert results == [True, True, True, False, False]
    sent = []
    spool.replay(sent.append)
    assert [item["event_id"] for item in sent] == [f"{number:032x}" for number in range(3)]
    # Room again once replayed.
    assert spool.write(payload(9, size=900))


def test_cap_counts_files_of_other_processes(tmp_path):
    one = len(json.dumps(payload(0, size=900), separators=(",", ":")))
    Spool(tmp_path, one * 2).write(payload(1, size=900))
    Spool(tmp_path, one * 2).write(payload(2, size=900))

    assert Spool(tmp_path, one * 2).write(payload(3, size=900)) is False


def test_replay_stops_at_broker_error(tmp_path):
    spool = Spool(tmp_path, 10_000_000)
    for number in range(5):
        spool.write(payload(number))
    sent = []

    def flaky(item):
        if len(sent) == 2:
            raise ConnectionError("refused")
        sent.append(item)

    result = spool.replay(flaky)

    assert result.sent == 2
    assert isinstance(result.error, ConnectionError)
    assert not result.empty
    assert len(spool.pending()) == 3
    rest = []
    spool.replay(rest.append)
    assert [item["event_id"] for item in sent + rest] == [f"{number:032x}" for number in range(5)]


def test_replay_limit(tmp_path):
    spool = Spool(tmp_path, 10_000_000)
    for number in range(5):
        spool.write(payload(number))

    result = spool.replay(lambda item: None, limit=2)

    assert result.sent == 2
    assert not result.empty
    assert len(spool) == 3


def test_corrupt_and_unsendable_files_are_quarantined(tmp_path):
    spool = Spool(tmp_path, 10_000_000)
    spool.write(payload(1))
    spool.write(payload(2))
    spool.write(payload(3))
    first, second, _ = spool.pending()
    first.write_bytes(b"{not json")

    def send(item):
        if item["event_id"] == f"{2:032x}":
            raise PermanentSendError("cannot encode")
        sent.append(item)

    sent = []
    result = spool.replay(send)

    assert result.quarantined == 2
    assert result.sent == 1
    assert result.empty
    assert [item["event_id"] for item in sent] == [f"{3:032x}"]
    assert sorted(path.name for path in tmp_path.glob("*.bad")) == sorted([first.name + ".bad", second.name + ".bad"])


def test_replay_is_busy_while_another_holds_the_lock(tmp_path):
    spool = Spool(tmp_path, 10_000_000)
    spool.write(payload(1))
    with open(tmp_path / LOCK_NAME, "a+b") as holder:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
        result = spool.replay(lambda item: pytest.fail("sent while another process replays"))
    assert result.busy
    assert result.sent == 0
    assert spool.replay(lambda item: None).sent == 1


def _replay_into(directory, queue):
    spool = Spool(directory, 10_000_000)
    sent = []
    deadline = time.monotonic() + 20
    while spool.pending() and time.monotonic() < deadline:
        spool.replay(lambda item: sent.append(item["event_id"]), limit=7)
    queue.put(sent)


def test_two_processes_never_send_the_same_file(tmp_path):
    spool = Spool(tmp_path, 10_000_000)
    for number in range(300):
        spool.write(payload(number))
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [context.Process(target=_replay_into, args=(tmp_path, queue)) for _ in range(2)]
    for child in children:
        child.start()
    sent = queue.get(timeout=30) + queue.get(timeout=30)
    for child in children:
        child.join(10)

    assert sorted(sent) == [f"{number:032x}" for number in range(300)]


def test_unwritable_folder_raises_oserror(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    spool = Spool(blocker / "spool", 10_000_000)
    with pytest.raises(OSError):
        spool.write(payload(1))
    assert spool.pending() == []


def test_names_keep_order_when_the_clock_steps_back(tmp_path, monkeypatch):
    spool = Spool(tmp_path, 10_000_000)
    clock = iter([5_000_000_000, 4_000_000_000, 3_000_000_000])
    monkeypatch.setattr("tasks.spool.time.time_ns", lambda: next(clock))
    for number in range(3):
        spool.write(payload(number))

    sent = []
    spool.replay(sent.append)
    assert [item["event_id"] for item in sent] == [f"{number:032x}" for number in range(3)]
