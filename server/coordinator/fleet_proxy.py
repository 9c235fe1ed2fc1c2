"""The nginx proxy that gives parties the SuperLink's Fleet API and nothing else.

Why it exists (Flower 1.41, read from the installed flwr source): ``flower-superlink`` serves the
Fleet API (``/v1/fleet/*``, what SuperNodes call), the Control API (``/v1/control/*``: start
runs, list runs, register SuperNodes) and the Runtime API (``/v1/runtime/*``: what the ServerApp
calls) from ONE uvicorn HTTPS server on ``--host``/``--port``. ``--fleet-api-address`` and
``--control-api-address`` are deprecated and no longer bind anything; without Flower's
enterprise account plugin the Control API does not authenticate callers. So whoever can reach the
SuperLink's port with the CA certificate could submit a run that every SuperNode executes.

``fedrisk server start`` therefore binds the SuperLink to a loopback port only the coordinator's
machine reaches (its ``flwr`` connection and the ServerApp use it) and puts this nginx on the
parties' address. The proxy terminates TLS with the federation's SuperLink certificate, forwards
exactly ``POST /v1/fleet/<endpoint>`` (and ``GET /health``) to the SuperLink over TLS verified
with the federation CA, and answers everything else with 403 before it reaches Flower.

nginx runs as a non-daemon child of the coordinator command with its own prefix (config, pid,
logs, temp folders inside the workspace): no global nginx configuration is read or changed.
Started as root, nginx runs its worker as ``nobody``: the worker needs no file access after
start-up (the master reads the certificates and opens the logs; with buffering off no temp file
is written), so the workspace may stay mode 0700.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from fedrisk.errors import ConfigError, FedRiskError, ProcessStopError
from fedrisk.federation.processes import child_running, start_logged_process, stop_process_tree
from server.coordinator.provisioning import check_host

FLEET_PATH_PREFIX: Final = "/v1/fleet/"
"""Flower 1.41's Fleet API route prefix (``flwr.superlink.routers.fleet.router``)."""

FLEET_ENDPOINT_PATTERN: Final = f"^{FLEET_PATH_PREFIX}[a-z-]+$"
"""What the proxy forwards: one Fleet endpoint, no query, no dot segments (no regex
metacharacters in the prefix, and none of ``{}";`` that would need quoting in nginx.conf)."""

HEALTH_PATH: Final = "/health"
NGINX_FALLBACK_DIRS: Final = ("/usr/sbin", "/usr/local/sbin")
"""Where Debian puts nginx: not on a non-root user's ``PATH``."""
NGINX_INSTALL_HINT: Final = (
    "install it with `apt-get install nginx` (Debian package nginx) or run "
    "`bash tests/support/ensure_nginx.sh`"
)
UPSTREAM_TLS_NAME: Final = "localhost"
"""Name the proxy checks on the SuperLink's certificate (always among its SANs)."""

CONFIG_FILE: Final = "nginx.conf"
ERROR_LOG: Final = "error.log"
ACCESS_LOG: Final = "access.log"
PID_FILE: Final = "nginx.pid"
REFUSAL: Final = "fedrisk fleet proxy: only the Flower Fleet API is served on this address"

# Characters that would end or reinterpret a value inside nginx.conf ($ expands variables).
_UNSAFE_IN_CONFIG: Final = re.compile(r'[\s";{}$\\#\'\x00-\x1f]')


class FleetProxyError(FedRiskError, RuntimeError):
    """The Fleet-API proxy (nginx) is missing, misconfigured, or failed to start or stop."""


def _safe_path(name: str, value: Path) -> Path:
    path = Path(value)
    if not path.is_absolute():
        raise ConfigError(f"{name} must be an absolute path; got {str(value)!r}")
    if _UNSAFE_IN_CONFIG.search(str(path)):
        raise ConfigError(
            f"{name} must not contain whitespace, quotes, ;, {{, }}, $, # or backslashes "
            f"(it is written into nginx.conf); got {str(value)!r}"
        )
    return path


class ProxyTLS(BaseModel):
    """TLS material: the proxy shows the SuperLink certificate and checks upstream with the CA."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    certificate: Path
    key: Path
    ca_certificate: Path

    @field_validator("certificate", "key", "ca_certificate")
    @classmethod
    def _absolute_and_safe(cls, value: Path, info: ValidationInfo) -> Path:
        return _safe_path(str(info.field_name), value)


class FleetProxyConfig(BaseModel):
    """Where the proxy listens, where the SuperLink is, and the proxy's own folder.

    ``tls=None`` is the plaintext mode of ``fedrisk server start --insecure`` (local experiments).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen_host: str
    listen_port: int = Field(ge=1, le=65535)
    upstream_port: int = Field(ge=1, le=65535)
    prefix: Path
    tls: ProxyTLS | None

    @field_validator("listen_host")
    @classmethod
    def _host(cls, value: str) -> str:
        return check_host(value.strip().strip("[]"), name="listen_host")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: Path) -> Path:
        return _safe_path("prefix", value)

    @model_validator(mode="after")
    def _distinct_ports(self) -> FleetProxyConfig:
        if self.listen_port == self.upstream_port:
            raise ConfigError(
                "listen_port must differ from upstream_port (the SuperLink's loopback port); "
                f"got {self.listen_port} for both"
            )
        return self

    @property
    def listen(self) -> str:
        """The nginx ``listen`` address (IPv6 in brackets)."""
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"


def _upstream_block(config: FleetProxyConfig) -> str:
    scheme = "https" if config.tls is not None else "http"
    lines = [
        f"proxy_pass {scheme}://superlink;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        # Stream bodies both ways: ciphertext uploads and downloads are large, and nothing then
        # needs nginx's temp files.
        "proxy_request_buffering off;",
        "proxy_buffering off;",
        "proxy_read_timeout 600s;",
        "proxy_send_timeout 600s;",
    ]
    if config.tls is not None:
        lines += [
            f'proxy_ssl_trusted_certificate "{config.tls.ca_certificate}";',
            "proxy_ssl_verify on;",
            "proxy_ssl_verify_depth 2;",
            f"proxy_ssl_name {UPSTREAM_TLS_NAME};",
            "proxy_ssl_session_reuse on;",
        ]
    return "\n".join(f"            {line}" for line in lines)


def render_nginx_config(config: FleetProxyConfig) -> str:
    """The nginx.conf text for ``config`` (pure; :func:`start_fleet_proxy` writes and runs it).

    Notes
    -----
    - The Fleet location matches the normalised URI and then the raw request line too
      (``$request_uri``), so dot segments or encoded slashes cannot smuggle a Control or Runtime
      path past the match: anything but ``/v1/fleet/<lowercase-endpoint>`` with no query is 403.
    - ``proxy_pass`` without a URI forwards the raw request line, which the check above pins.
    - Only POST reaches Fleet endpoints (all of Flower's are POST); only GET/HEAD reach /health.
    """
    prefix = config.prefix
    tls = config.tls
    listen = f"listen {config.listen}{' ssl' if tls else ''};"
    server_tls = ""
    if tls is not None:
        server_tls = (
            f'        ssl_certificate "{tls.certificate}";\n'
            f'        ssl_certificate_key "{tls.key}";\n'
            "        ssl_protocols TLSv1.2 TLSv1.3;\n"
            "        ssl_session_cache shared:fleet_tls:1m;\n"
        )
    upstream = _upstream_block(config)
    return f"""# Written by `fedrisk server start` ({__name__}); rewritten at every start.
# Parties reach only the Fleet API; the SuperLink listens on 127.0.0.1:{config.upstream_port}.
daemon off;
master_process on;
worker_processes 1;
pid "{prefix / PID_FILE}";
error_log "{prefix / ERROR_LOG}" notice;

events {{
    worker_connections 512;
}}

http {{
    access_log "{prefix / ACCESS_LOG}";
    client_body_temp_path "{prefix / "tmp" / "body"}";
    proxy_temp_path "{prefix / "tmp" / "proxy"}";
    fastcgi_temp_path "{prefix / "tmp" / "fastcgi"}";
    uwsgi_temp_path "{prefix / "tmp" / "uwsgi"}";
    scgi_temp_path "{prefix / "tmp" / "scgi"}";
    server_tokens off;
    default_type text/plain;

    upstream superlink {{
        server 127.0.0.1:{config.upstream_port};
        keepalive 16;
    }}

    server {{
        {listen}
{server_tls}        client_max_body_size 0;

        location ~ {FLEET_ENDPOINT_PATTERN} {{
            if ($request_uri !~ "{FLEET_ENDPOINT_PATTERN}") {{
                return 403 "{REFUSAL}\\n";
            }}
            limit_except POST {{
                deny all;
            }}
{upstream}
        }}

        location = {HEALTH_PATH} {{
            limit_except GET {{
                deny all;
            }}
{upstream}
        }}

        location / {{
            return 403 "{REFUSAL}\\n";
        }}
    }}
}}
"""


def find_nginx(*, search_path: str | None = None) -> str:
    """The nginx binary: on ``search_path`` (``PATH`` then /usr/sbin, /usr/local/sbin by default).

    Raises
    ------
    FleetProxyError
        nginx is not installed; the message names the install command.
    """
    if search_path is None:
        search_path = os.pathsep.join([os.environ.get("PATH", ""), *NGINX_FALLBACK_DIRS])
    found = shutil.which("nginx", path=search_path)
    if found is None:
        raise FleetProxyError(
            "nginx must be installed: `fedrisk server start` puts it in front of the SuperLink "
            f"so parties reach only the Fleet API; {NGINX_INSTALL_HINT}"
        )
    return found


@dataclass
class FleetProxyProcess:
    """A running nginx started by :func:`start_fleet_proxy` (the master process's pid).

    ``host``/``port`` are what it binds (perhaps a wildcard); ``address`` is how this machine
    reaches it.
    """

    pid: int
    host: str
    port: int
    address: str
    prefix: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def config_path(self) -> Path:
        """The nginx.conf it runs."""
        return self.prefix / CONFIG_FILE

    @property
    def error_log(self) -> Path:
        """nginx's error log (start-up failures land here)."""
        return self.prefix / ERROR_LOG

    def is_running(self) -> bool:
        """Whether the nginx master is still alive."""
        return child_running(self.pid, self.process)

    def stop(self, *, timeout: float = 10.0) -> None:
        """SIGTERM the nginx master and its worker (SIGKILL after ``timeout`` seconds)."""
        try:
            stop_process_tree(self.pid, process=self.process, grace=timeout)
        except ProcessStopError as e:
            raise FleetProxyError(f"the Fleet-API proxy must stop; {e}") from e


def start_fleet_proxy(config: FleetProxyConfig, *, address: str) -> FleetProxyProcess:
    """Write ``config``'s nginx.conf into its prefix and start nginx (not waiting for readiness).

    Parameters
    ----------
    config
        Listen address, the SuperLink's loopback port, TLS material and the prefix folder.
    address
        ``HOST:PORT`` parties use to reach the proxy (recorded on the returned handle).

    Returns
    -------
    FleetProxyProcess
        The nginx master; the caller health-checks it through ``/health``.

    Raises
    ------
    FleetProxyError
        nginx is missing or exited at once (the message carries its error log's tail).
    """
    nginx = find_nginx()
    prefix = config.prefix
    (prefix / "tmp").mkdir(parents=True, exist_ok=True, mode=0o700)
    prefix.chmod(0o700)
    conf = prefix / CONFIG_FILE
    conf.write_text(render_nginx_config(config), encoding="utf-8")
    stderr_path = prefix / ERROR_LOG
    # -e: nginx opens its compiled-in /var/log/nginx/error.log before reading the config unless
    # told otherwise; -p keeps relative lookups inside the prefix.
    argv = [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(stderr_path)]
    process = start_logged_process(argv, cwd=prefix, env=None, log_path=stderr_path)
    return FleetProxyProcess(
        pid=process.pid,
        host=config.listen_host,
        port=config.listen_port,
        address=address,
        prefix=prefix,
        process=process,
    )
