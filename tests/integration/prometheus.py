"""A real Prometheus (Debian's ``prometheus`` package, ``make prometheus``) for tests.

``PrometheusProcess([ScrapeJob(...)]).start()`` writes a config that scrapes
the given targets every second with static labels, starts the server on
127.0.0.1 with a free port and a temporary data directory, and waits
(bounded) for ``/-/ready``. ``stop()`` ends it and removes the directory; use
it as a context manager, or the ``atexit`` hook stops any left running.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.integration.harness import (
    LOCALHOST,
    WaitTimeout,
    async_wait_for,
    free_port,
    terminate,
    wait_for,
)

_live: set[PrometheusProcess] = set()


def prometheus_binary() -> str | None:
    """Debian installs it as /usr/bin/prometheus."""
    return shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )


@atexit.register
def _stop_leftovers() -> None:
    for proc in list(_live):
        proc.stop(grace=0.5)


@dataclass(frozen=True)
class ScrapeJob:
    name: str
    targets: Sequence[str]  # HOST:PORT
    metrics_path: str = "/metrics"
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(eq=False)
class PrometheusProcess:
    jobs: Sequence[ScrapeJob]
    scrape_interval: str = "1s"
    startup_timeout: float = 20.0
    port: int = field(default_factory=free_port)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _dir: Path | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def config(self) -> dict[str, Any]:
        return {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": [
                {
                    "job_name": job.name,
                    "metrics_path": job.metrics_path,
                    "static_configs": [
                        {"targets": [t], "labels": dict(job.labels)} for t in job.targets
                    ],
                }
                for job in self.jobs
            ],
        }

    def start(self) -> PrometheusProcess:
        binary = prometheus_binary()
        if binary is None:
            raise FileNotFoundError("prometheus not installed (make prometheus)")
        if self._proc is not None:
            raise RuntimeError("already started")
        self._dir = Path(tempfile.mkdtemp(prefix="sluice-prometheus-"))
        config = self._dir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        args = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self._dir / 'data'}",
            f"--web.listen-address={LOCALHOST}:{self.port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ]
        with (self._dir / "prometheus.log").open("wb") as log:
            self._proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        _live.add(self)
        try:
            wait_for(self._ready, self.startup_timeout, interval=0.1, what="prometheus /-/ready")
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        if self._proc is None or self._proc.poll() is not None:
            code = None if self._proc is None else self._proc.returncode
            raise RuntimeError(f"prometheus exited with {code}\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=1.0) as r:
                return int(r.status) == 200
        except (OSError, urllib.error.URLError):
            return False

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query (now, or at ``at``); its ``result`` list."""
        params = {"query": promql} | ({"time": f"{at:.3f}"} if at is not None else {})
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5.0) as r:
            doc = json.loads(r.read())
        if doc.get("status") != "success":
            raise RuntimeError(f"query {promql!r}: {doc}")
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result

    async def wait_scraped_after(self, t: float, timeout: float = 10.0) -> None:
        """Wait until every target has been scraped (and is up) with a scrape that began after
        the Unix time ``t``: from then on a query sees what the targets counted by ``t``.

        Async (queries in a thread) so that targets served by this event loop keep answering.
        """
        targets = sum(len(job.targets) for job in self.jobs)

        def key(sample: dict[str, Any]) -> tuple[str, str]:
            return sample["metric"]["job"], sample["metric"]["instance"]

        async def caught_up() -> bool:
            # timestamp() of a plain selector is the scrape's; of an expression, the query's
            stamps = await asyncio.to_thread(self.query, "timestamp(up)")
            ups = await asyncio.to_thread(self.query, "up")
            up = {key(s) for s in ups if s["value"][1] == "1"}
            return len(stamps) == targets and all(
                key(s) in up and float(s["value"][1]) > t for s in stamps
            )

        try:
            await async_wait_for(
                caught_up, timeout, interval=0.1, what=f"every target scraped after {t}"
            )
        except WaitTimeout as exc:
            raise WaitTimeout(f"{exc}\n{self.log_tail()}") from None

    def stop(self, grace: float = 5.0) -> int | None:
        proc, self._proc = self._proc, None
        _live.discard(self)
        rc = terminate(proc, grace)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        return rc

    def log_tail(self, lines: int = 30) -> str:
        if self._dir is None:
            return "(no prometheus log)"
        try:
            text = (self._dir / "prometheus.log").read_text(errors="replace")
        except OSError:
            return "(no prometheus log)"
        return "--- prometheus log (tail) ---\n" + "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> PrometheusProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
