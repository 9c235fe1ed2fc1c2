"""What the Fleet-API proxy (nginx in front of the SuperLink) costs: start-up and per request.

Provisions a 3-party federation in a temporary folder, starts the TLS SuperLink with
``fleet_proxy=True`` (as ``fedrisk server start`` does), and measures in one run:

- start-up: the SuperLink alone (to ``/health``) and the proxy alone (nginx start to ``/health``
  answered through it, TLS on both legs);
- request latency over one kept-alive HTTPS connection, direct to the SuperLink vs through the
  proxy: ``GET /health`` (an empty answer) and a 1 MiB ``POST /v1/fleet/push-object`` without
  node signature (Flower reads the body, then answers 401), the size of a few ciphertexts.

Prints medians and the proxy / direct ratios. Everything binds 127.0.0.1; every process is
stopped by PID on exit. About a minute on a loaded 2-core machine.

    .venv/bin/python benchmarks/fleet_proxy.py [--requests 200]
"""

from __future__ import annotations

import argparse
import http.client
import ssl
import statistics
import tempfile
import time
from pathlib import Path

from server.coordinator.fleet_proxy import FleetProxyConfig, ProxyTLS, start_fleet_proxy
from server.coordinator.provisioning import WorkspaceLayout
from server.coordinator.superlink import start_superlink, wait_until_ready
from simulations.enrollment import enroll_parties

BODY = bytes(1 << 20)


def _timed_requests(
    address: str, ca: Path, *, method: str, path: str, body: bytes | None, count: int
) -> list[float]:
    host, _, port = address.rpartition(":")
    context = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection(host, int(port), timeout=30, context=context)
    seconds = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            conn.request(method, path, body=body, headers={"Content-Type": "application/protobuf"})
            conn.getresponse().read()
            seconds.append(time.perf_counter() - start)
    finally:
        conn.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per measurement")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="fleet-proxy-bench-") as tmp:
        federation = enroll_parties(Path(tmp) / "ws", parties=["bank_a", "bank_b", "bank_c"])
        layout = WorkspaceLayout(federation.workspace.root)
        start = time.perf_counter()
        link = start_superlink(layout.root, fleet_proxy=True)
        with_proxy = time.perf_counter() - start
        try:
            assert link.proxy is not None
            proxy_config = FleetProxyConfig(
                listen_host="127.0.0.1",
                listen_port=link.proxy.port,
                upstream_port=link.port,
                prefix=link.proxy.prefix,
                tls=ProxyTLS(
                    certificate=layout.superlink_certificate,
                    key=layout.superlink_key,
                    ca_certificate=layout.ca_certificate,
                ),
            )
            # Restart the proxy alone to time it apart from the SuperLink.
            link.proxy.stop()
            start = time.perf_counter()
            link.proxy = start_fleet_proxy(proxy_config, address=link.proxy.address)
            wait_until_ready(
                link.proxy.address,
                ca_certificate=layout.ca_certificate,
                is_alive=link.proxy.is_running,
                timeout=30.0,
            )
            proxy_start = time.perf_counter() - start

            rows = []
            for label, method, path, body in (
                ("GET /health", "GET", "/health", None),
                ("1 MiB POST /v1/fleet/push-object", "POST", "/v1/fleet/push-object", BODY),
            ):
                direct, proxied = (
                    _timed_requests(
                        address,
                        layout.ca_certificate,
                        method=method,
                        path=path,
                        body=body,
                        count=args.requests,
                    )
                    for address in (link.address, link.fleet_address)
                )
                rows.append((label, statistics.median(direct), statistics.median(proxied)))
        finally:
            link.stop()

    print(f"start-up: SuperLink + proxy {with_proxy:.2f} s; the proxy alone {proxy_start:.2f} s")
    print(f"{'request':36} {'direct ms':>10} {'proxy ms':>10} {'ratio':>7}")
    for label, direct_s, proxied_s in rows:
        print(
            f"{label:36} {direct_s * 1000:10.2f} {proxied_s * 1000:10.2f} "
            f"{proxied_s / direct_s:7.2f}"
        )


if __name__ == "__main__":
    main()
