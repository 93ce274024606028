"""Model slots on disk: atomic state, complete-or-not slots, pruning."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from agent.deploy.slots import (
    ModelSlots,
    ModelState,
    atomic_write_json,
    read_generation,
    slot_name,
    write_generation,
)

CHILD = """
import sys
from pathlib import Path
from agent.deploy.slots import atomic_write_json
path = Path(sys.argv[1])
i = 0
print("ready", flush=True)
while True:
    i += 1
    atomic_write_json(path, {"n": i, "pad": "x" * 20000})
"""


def test_state_survives_sigkill_mid_write(tmp_path: Path) -> None:
    """A writer killed at arbitrary moments always leaves a whole state file behind."""
    path = tmp_path / "state.json"
    atomic_write_json(path, {"n": 0, "pad": ""})
    seen = []
    for _ in range(5):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path)],
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[3],
        )
        assert child.stdout is not None and child.stdout.readline().strip() == b"ready"
        time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        doc = json.loads(path.read_bytes())  # never torn
        seen.append(doc["n"])
    assert max(seen) > 0


def test_state_round_trip(tmp_path: Path) -> None:
    slots = ModelSlots(tmp_path, "m")
    assert slots.load() == ModelState()
    slots.state = ModelState(
        active="2-aaaa", previous="1-bbbb", generation=7, report={"x": 1}, unsent=True
    )
    slots.save()
    assert ModelSlots(tmp_path, "m").load() == slots.state
    write_generation(tmp_path, 42)
    assert read_generation(tmp_path) == 42
    assert read_generation(tmp_path / "nowhere") == 0


def test_unreadable_state_is_a_fresh_start(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "state.json").write_text("{not json")
    assert ModelSlots(tmp_path, "m").load() == ModelState()


def test_a_slot_is_complete_only_after_the_final_rename(tmp_path: Path) -> None:
    slots = ModelSlots(tmp_path, "m")
    slot = slot_name(3, "c" * 64)
    assert slot == "3-cccccccccccc"
    part = slots.partial(slot, "tflite")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"model bytes")
    assert slots.complete(slot) is None
    # a crash after release.json but before the rename: still not complete
    (slots.slot_dir(slot) / "release.json").write_text("{}")
    assert slots.complete(slot) is None
    final = slots.finish(slot, "tflite", {"release": {}, "signature": {}})
    assert final == slots.complete(slot) and final.read_bytes() == b"model bytes"
    assert not part.exists()


def test_prune_keeps_active_previous_and_pinned(tmp_path: Path) -> None:
    slots = ModelSlots(tmp_path, "m")
    for seq in range(1, 6):
        name = slot_name(seq, f"{seq}" * 64)
        slots.partial(name, "tflite").parent.mkdir(parents=True)
        slots.partial(name, "tflite").write_bytes(b"x")
        slots.finish(name, "tflite", {})
    downloading = slot_name(6, "6" * 64)
    slots.slot_dir(downloading).mkdir()
    slots.state.active, slots.state.previous = slot_name(4, "4" * 64), slot_name(2, "2" * 64)
    removed = slots.prune(2, {downloading})
    left = sorted(p.name for p in slots.dir.iterdir() if p.is_dir())
    assert left == sorted([slot_name(2, "2" * 64), slot_name(4, "4" * 64), downloading])
    assert len(removed) == 3
    # keeping three releases keeps the newest other complete one too
    slots = ModelSlots(tmp_path, "n")
    for seq in (1, 2, 3):
        name = slot_name(seq, f"{seq}" * 64)
        slots.partial(name, "tflite").parent.mkdir(parents=True)
        slots.partial(name, "tflite").write_bytes(b"x")
        slots.finish(name, "tflite", {})
    slots.state.active = slot_name(1, "1" * 64)
    slots.prune(2, set())
    assert sorted(p.name for p in slots.dir.iterdir()) == [
        slot_name(1, "1" * 64),
        slot_name(3, "3" * 64),
    ]
