"""
A real Prometheus server (Debian's C{prometheus}) on loopback, scraping
given targets every second, and its HTTP query API.
"""

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
from tests.support.processes import stop_process


def free_port():
    """
    A TCP port of 127.0.0.1 nobody listens on now.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrometheusServer:
    def __init__(self, directory, targets, interval="1s"):
        self.directory = directory
        self.targets = targets
        self.interval = interval
        self.port = None
        self.proc = None
        self.log = directory / "prometheus.log"

    def start(self, timeout=30):
        program = shutil.which("prometheus")
        if program is None:
            pytest.fail("prometheus is missing: scripts/run-tests installs it")
        config = self.directory / "prometheus.yml"
        # JSON is YAML: no YAML library needed to write it.
        config.write_text(json.dumps({
            "global": {"scrape_interval": self.interval, "scrape_timeout": self.interval},
            "scrape_configs": [{
                "job_name": "hlfs",
                "static_configs": [{"targets": self.targets}],
            }],
        }))
        self.port = free_port()
        self.proc = subprocess.Popen(
            [program, f"--config.file={config}", f"--storage.tsdb.path={self.directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url("/-/ready"), timeout=2) as reply:
                    if reply.status == 200:
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("prometheus did not start:\n" + self.log.read_text())
            time.sleep(0.2)

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def query(self, expression):
        """
        Return C{{frozenset(labels): value}} for an instant query.
        """
        url = self.url("/api/v1/query?" + urllib.parse.urlencode({"query": expression}))
        with urllib.request.urlopen(url, timeout=5) as reply:
            answer = json.load(reply)
        assert answer["status"] == "success", answer
        return {
            frozenset(item["metric"].items()): float(item["value"][1])
            for item in answer["data"]["result"]
        }

    def value(self, expression):
        """
        The value of a query with at most one series; L{None} for none.
        """
        result = self.query(expression)
        assert len(result) <= 1, result
        return next(iter(result.values()), None)

    def wait_for(self, expression, expected, timeout=30):
        """
        Wait until the query's value is C{expected}; return the last value.
        """
        deadline = time.monotonic() + timeout
        while True:
            value = self.value(expression)
            if value == expected or time.monotonic() > deadline:
                return value
            time.sleep(0.25)

    def stop(self):
        stop_process(self.proc)
