"""The Fleet-API proxy's nginx.conf: what it forwards, what it refuses, and the input it rejects.

The generated configuration is checked by the real nginx (``nginx -t``); which paths are Fleet
paths is checked against Flower's own routers, so a Flower upgrade that moves them fails here.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError

from fedrisk.errors import ConfigError
from server.coordinator.fleet_proxy import (
    FLEET_ENDPOINT_PATTERN,
    FLEET_PATH_PREFIX,
    NGINX_INSTALL_HINT,
    REFUSAL,
    FleetProxyConfig,
    FleetProxyError,
    ProxyTLS,
    find_nginx,
    render_nginx_config,
)
from server.coordinator.provisioning import create_ca, issue_server_certificate
from server.coordinator.superlink import LOG_FILE, PROXY_DIR, RUNTIME_FILE, start_superlink
from simulations.enrollment import enroll_parties


def _nginx_or_skip() -> str:
    try:
        return find_nginx()
    except FleetProxyError as e:  # pragma: no cover - make test installs nginx
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> ProxyTLS:
    folder = tmp_path_factory.mktemp("tls")
    ca_key, ca_cert = create_ca("unit")
    key, cert = issue_server_certificate(
        ca_key, ca_cert, hosts=["127.0.0.1", "localhost"], validity_days=1
    )
    (folder / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (folder / "superlink.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "superlink.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ProxyTLS(
        certificate=folder / "superlink.crt",
        key=folder / "superlink.key",
        ca_certificate=folder / "ca.crt",
    )


def _config(folder: Path, tls: ProxyTLS | None, **kw: object) -> FleetProxyConfig:
    fields: dict[str, object] = {
        "listen_host": "127.0.0.1",
        "listen_port": 9443,
        "upstream_port": 9000,
        "prefix": folder,
        "tls": tls,
    }
    fields.update(kw)
    return FleetProxyConfig.model_validate(fields)


@pytest.mark.parametrize("secure", [True, False], ids=["tls", "insecure"])
def test_nginx_accepts_the_generated_config(tmp_path: Path, tls: ProxyTLS, secure: bool) -> None:
    nginx = _nginx_or_skip()
    config = _config(tmp_path, tls if secure else None)
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_nginx_config(config))
    (tmp_path / "tmp").mkdir()

    checked = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        timeout=30,
        check=False,
    )

    assert checked.returncode == 0, checked.stderr.decode()
    assert b"test is successful" in checked.stderr


def test_only_fleet_and_health_are_forwarded_and_upstream_tls_is_verified(
    tmp_path: Path, tls: ProxyTLS
) -> None:
    text = render_nginx_config(_config(tmp_path, tls))

    locations = re.findall(r"^\s*location (.+?) \{", text, flags=re.MULTILINE)
    assert locations == [f"~ {FLEET_ENDPOINT_PATTERN}", "= /health", "/"]
    assert text.count("proxy_pass https://superlink;") == 2
    assert "server 127.0.0.1:9000;" in text
    assert "listen 127.0.0.1:9443 ssl;" in text
    assert f'ssl_certificate "{tls.certificate}";' in text
    assert f'proxy_ssl_trusted_certificate "{tls.ca_certificate}";' in text
    assert text.count("proxy_ssl_verify on;") == 2
    # The catch-all refuses; so does the raw-request check inside the Fleet location.
    assert text.count(f'return 403 "{REFUSAL}\\n";') == 2
    assert "daemon off;" in text
    assert f'pid "{tmp_path / "nginx.pid"}";' in text


def test_insecure_mode_has_no_tls_anywhere(tmp_path: Path) -> None:
    text = render_nginx_config(_config(tmp_path, None, listen_host="::1"))

    assert "listen [::1]:9443;" in text
    assert "proxy_pass http://superlink;" in text
    assert "ssl" not in text


def test_the_fleet_pattern_covers_exactly_flowers_fleet_routes() -> None:
    from fastapi.routing import APIRoute, iter_route_contexts
    from flwr.superlink.main import create_app

    # Every route the SuperLink app serves (in-memory state: nothing is started or written).
    routes = [
        context.route.path
        for context in iter_route_contexts(create_app().routes)
        if isinstance(context.route, APIRoute)
    ]
    forwarded = [path for path in routes if re.fullmatch(FLEET_ENDPOINT_PATTERN, path)]
    fleet = [path for path in routes if path.startswith(FLEET_PATH_PREFIX)]

    assert f"{FLEET_PATH_PREFIX}pull-messages" in forwarded
    assert forwarded == fleet
    assert "/v1/control/start-run" in routes
    assert "/v1/runtime/pull-messages" in routes


def test_missing_nginx_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(FleetProxyError, match="apt-get install nginx") as caught:
        find_nginx(search_path=str(tmp_path))

    assert NGINX_INSTALL_HINT in str(caught.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"listen_host": "0.0.0.0; include /etc/passwd"}, "listen_host must be an IP address"),
        ({"listen_host": ""}, "listen_host must be an IP address"),
        ({"listen_port": 0}, "greater than or equal to 1"),
        ({"upstream_port": 70000}, "less than or equal to 65535"),
        ({"upstream_port": 9443}, "listen_port must differ from upstream_port"),
        ({"prefix": Path("relative/dir")}, "prefix must be an absolute path"),
        ({"prefix": Path("/tmp/a;b")}, "prefix must not contain"),
        ({"prefix": Path("/tmp/$host")}, "prefix must not contain"),
        ({"workers": 4}, "Extra inputs are not permitted"),
    ],
)
def test_bad_config_is_refused_with_the_field_named(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        _config(tmp_path, None, **change)


def test_a_certificate_path_that_would_break_the_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="key must not contain"):
        ProxyTLS(
            certificate=tmp_path / "a.crt",
            key=tmp_path / 'k"ey',
            ca_certificate=tmp_path / "ca.crt",
        )


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"fleet_proxy": True, "port": 9443, "control_port": 9443}, FleetProxyError, "differ"),
        ({"control_port": 9000}, ConfigError, "control_port is only used with fleet_proxy"),
    ],
)
def test_clashing_ports_are_refused_before_anything_starts(
    tmp_path: Path, options: dict[str, object], error: type[Exception], message: str
) -> None:
    workspace = enroll_parties(tmp_path / "ws", parties=["bank_a"]).workspace

    with pytest.raises(error, match=message):
        start_superlink(workspace.root, **options)  # type: ignore[arg-type]

    assert not (workspace.superlink_dir / LOG_FILE).exists()
    assert not (workspace.superlink_dir / RUNTIME_FILE).exists()
    assert not (workspace.superlink_dir / PROXY_DIR).exists()
