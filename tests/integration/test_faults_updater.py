"""The updater process SIGKILLed 50 times over a running stream: no event lost or applied twice.

Each run is a real process (``python -m autoretrain.webhook.updater``, through the
test wrapper ``servers.updater`` that adds a status file and a save delay)
consuming a live topic into a model store; it is killed at a random moment
(seeded), some kills landing inside a model save (the wrapper's save delay
widens the window between the arrays file and the metadata, the commit marker). Every
restart must load the newest committed version and resume from the offsets
stored with it; at the end the persisted model has applied every produced
event exactly once. Figures go to reliability/kafka.json.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from servers.common import poll_until
from servers.updater import command as updater_command
from servers.updater import env as updater_env
from servers.webhook import record_figures as _record

from autoretrain.exporter.events import EventIdFactory, encode_event, run_event
from autoretrain.webhook.updater.store import ModelStore

REPO = Path(__file__).resolve().parents[2]
FIGURES = REPO / "reliability" / "kafka.json"
KILLS = 50


def record_figures(key: str, figures: dict[str, Any]) -> None:
    """Merge ``figures`` under ``key`` into reliability/kafka.json (RELIABILITY.md cites it)."""
    _record(FIGURES, key, figures)


class Stream:
    """Produces run events at a steady pace on a thread; counts acknowledged events."""

    def __init__(self, bootstrap: str, topic: str, per_tick: int = 20, tick: float = 0.05) -> None:
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        self.topic, self.per_tick, self.tick = topic, per_tick, tick
        self.ids = EventIdFactory()
        self.futures: list[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._rng = random.Random(11)
        self.error: BaseException | None = None

    def _run(self) -> None:
        i = 0
        try:
            while not self._stop.is_set():
                for _ in range(self.per_tick):
                    agent = f"agent-{self._rng.randrange(5)}"
                    status = "success" if self._rng.random() < 0.7 else "failure"
                    event = run_event(self.ids(), 1_000.0 + i, agent, "llm", status, 40.0, 7,
                                      0.001, task_type=f"task-{self._rng.randrange(3)}")
                    future = self.producer.send(self.topic, key=agent.encode(),
                                                value=encode_event(event))
                    self.futures.append(future)
                    i += 1
                # Pacing a producer, not polling a condition: a steady stream.
                self._stop.wait(self.tick)
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> int:
        """Stop producing; return how many events the broker acknowledged (all, or fail)."""
        self._stop.set()
        self._thread.join(30)
        self.producer.flush(timeout=60)
        self.producer.close()
        assert self.error is None, f"producer failed: {self.error!r}"
        failed = [f for f in self.futures if not f.succeeded()]
        assert not failed, f"{len(failed)} sends not acknowledged: {failed[0].exception!r}"
        return len(self.futures)


def read_status(path: Path) -> dict[str, Any] | None:
    try:
        status: dict[str, Any] = json.loads(path.read_text())
        return status
    except (FileNotFoundError, ValueError):
        return None


def save_debris(store: Path) -> tuple[list[str], list[str]]:
    """(temp files, array files newer than the newest metadata): a save cut short."""
    names = [p.name for p in store.iterdir()] if store.is_dir() else []
    committed = [int(n[6:14]) for n in names if n.startswith("model-") and n.endswith(".json")]
    newest = max(committed, default=0)
    tmp = [n for n in names if n.startswith(".tmp-model-")]
    stray = [n for n in names if n.startswith("model-") and n.endswith(".npz")
             and int(n[6:14]) > newest]
    return tmp, stray


@pytest.mark.timeout(900)
def test_updater_sigkilled_50_times_applies_every_event_once(kafka_server, kafka_topic: str,
                                                             tmp_path: Path) -> None:
    started = time.monotonic()
    bootstrap = kafka_server.bootstrap
    group = f"crash-{uuid.uuid4().hex[:8]}"
    store_dir, status_path = tmp_path / "models", tmp_path / "status.json"
    log_path = tmp_path / "updater.log"
    command = updater_command(
        "--kafka-servers", bootstrap,
        "--topic", kafka_topic, "--group", group, "--model-dir", str(store_dir),
        "--batch-size", "50", "--batch-timeout-seconds", "0.05",
        "--save-interval-seconds", "0.2", "--save-delay-seconds", "0.05",
        # Ignored since the updater assigns itself every partition (a restart
        # no longer waits for a session); kept: old command lines still work.
        "--group-instance-id", "updater-0", "--session-timeout-ms", "6000",
        "--status-file", str(status_path),
    )
    rng = random.Random(2024)
    stream = Stream(bootstrap, kafka_topic)
    stream.start()
    kills_in_save = kills_in_tmp_write = kills_between_files = 0
    reapplied = 0  # applied in memory but not yet saved when killed: applied again after
    resumed: list[dict[str, Any]] = []
    earlier_stray: set[str] = set()
    proc: subprocess.Popen[bytes] | None = None
    log = log_path.open("ab")

    def launch() -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
        expected = ModelStore(store_dir).load_latest() if store_dir.is_dir() else None
        p = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                             env=updater_env())
        status = poll_until(
            lambda: s if (s := read_status(status_path)) and s["pid"] == p.pid else None,
            timeout=60, interval=0.02, what=f"updater pid {p.pid} status")
        loaded = status["loaded"]
        # Every restart loads the newest committed version, intact, and
        # resumes from the offsets stored with it.
        if expected is None:
            assert loaded["version"] == 0 and loaded["offsets"] == {}
        else:
            kafka = expected.metadata["kafka"]
            assert loaded["version"] == expected.version, (loaded, expected.version)
            assert loaded["events_seen"] == expected.metadata["events_seen"]
            assert loaded["offsets"] == kafka["offsets"]
        assert status["corrupt_versions"] == []
        return p, status

    try:
        for kill in range(KILLS):
            proc, status = launch()
            resumed.append(status["loaded"])
            time.sleep(rng.uniform(0.3, 2.0))  # the random moment of the crash
            last = read_status(status_path) or status
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            # Debris of this kill only: a start removes temp files, and array
            # files without metadata once a newer version is committed.
            tmp, stray = save_debris(store_dir)
            stray = [n for n in stray if n not in earlier_stray]
            earlier_stray.update(stray)
            kills_in_tmp_write += bool(tmp)
            kills_between_files += bool(stray)
            kills_in_save += bool(tmp or stray)
            newest = ModelStore(store_dir).load_latest() if store_dir.is_dir() else None
            saved = newest.metadata["events_seen"] if newest is not None else 0
            reapplied += max(0, last["events_seen"] - saved)
            assert proc.returncode == -signal.SIGKILL, f"run {kill} exited by itself"
        produced = stream.stop()

        proc, status = launch()
        final = poll_until(
            lambda: s if (s := read_status(status_path)) and s["events_seen"] >= produced
            and s["consumer_lag"] == 0 else None,
            timeout=120, interval=0.1, what=f"{produced} events applied")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        stream._stop.set()

    stopped = read_status(status_path)
    assert stopped is not None and stopped.get("stopped")
    latest = ModelStore(store_dir).load_latest()
    assert latest is not None
    persisted = latest.metadata["events_seen"]
    offsets = latest.metadata["kafka"]["offsets"]
    # Exactly once: the persisted model counts every produced event once and
    # its stored position is the end of the topic.
    assert persisted == produced, (persisted, produced)
    assert sum(offsets.values()) == produced
    assert final["duplicates"] == 0 and final["invalid"] == 0
    assert kills_in_save >= 1, "no kill landed inside a save; the test lost its point"
    # Crashed saves leave no growing pile: versions kept plus at most one stray.
    assert save_debris(store_dir)[0] == []
    assert len(list(store_dir.iterdir())) <= 2 * 10 + 1
    record_figures("point_2_updater_sigkill", {
        "command": "python -m pytest tests/integration/test_faults_updater.py "
                   "-k sigkilled_50_times",
        "kills": KILLS,
        "restarts_survived": KILLS,
        "kills_during_save": kills_in_save,
        "kills_during_a_file_write": kills_in_tmp_write,
        "kills_between_arrays_and_metadata": kills_between_files,
        "events_produced": produced,
        "events_in_persisted_model": persisted,
        "events_reapplied_after_crash_unsaved": reapplied,
        "duplicates_applied": 0,
        "final_model_version": latest.version,
        "restarts_resumed_from_stored_offsets": len(resumed),
        "duration_seconds": round(time.monotonic() - started, 1),
    })
