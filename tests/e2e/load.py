"""A small load generator for end-to-end tests: client threads posting digit images to an agent."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import httpx

from tests.e2e.processes import digit_pngs

MODEL = "digits-edge"


@dataclass
class Load:
    url: str
    clients: int = 4
    limit: int | None = None
    answered: list[str] = field(default_factory=list)
    failures: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        images = digit_pngs(50)
        for i in range(self.clients):
            t = threading.Thread(target=self._run, args=(images, i), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _run(self, images: list[tuple[bytes, int]], offset: int) -> None:
        with httpx.Client(timeout=10) as client:
            n = offset
            while not self._stop.is_set():
                with self._lock:
                    if self.limit is not None and len(self.answered) >= self.limit:
                        return
                png, _ = images[n % len(images)]
                n += self.clients
                try:
                    r = client.post(
                        f"{self.url}/v1/models/{MODEL}/image",
                        content=png,
                        headers={"Content-Type": "image/png"},
                    )
                except httpx.HTTPError:
                    with self._lock:
                        self.failures += 1
                    self._stop.wait(0.05)
                    continue
                with self._lock:
                    if r.status_code == 200:
                        self.answered.append(r.json()["result_id"])
                    else:
                        self.failures += 1

    def count(self) -> int:
        with self._lock:
            return len(self.answered)

    def stop(self) -> list[str]:
        self._stop.set()
        for t in self._threads:
            t.join(15)
        with self._lock:
            return list(self.answered)

    def wait(self) -> list[str]:
        for t in self._threads:
            t.join(120)
        return self.stop()
