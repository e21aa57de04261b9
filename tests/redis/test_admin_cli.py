"""The admin commands (`controltower zone|peer|leases`) against a real `controltower serve`."""
from __future__ import annotations

import datetime
import http.server
import ipaddress
import json
import ssl
import threading
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from controltower import admin
from controltower.apiclient import ApiClient, ApiError
from ipam.store import ZoneStore
from testbed.redisserver import free_port
from wire.errors import Conflict, InvalidInput, NotFound, Unavailable, http_status
from wire.proof import generate_private_key, public_key_of

# No setting of the machine running the tests leaks in (None unsets a variable).
CLEAN_ENV = {name: None for name in (
    "CONTROLTOWER_API_URL", "CONTROLTOWER_TOKEN", "CONTROLTOWER_ADMIN_TOKEN",
    "CONTROLTOWER_TOKEN_FILE", "CONTROLTOWER_ADMIN_TOKEN_FILE", "CONTROLTOWER_CA_FILE",
    "CONTROLTOWER_CERT_FILE", "CONTROLTOWER_KEY_FILE", "CONTROLTOWER_API_TIMEOUT")}


@pytest.fixture(scope="module")
def cli() -> click.Group:
    group = click.Group("controltower")
    admin.register(group)
    return group


@pytest.fixture(scope="module")
def redis_proc(module_redis):
    """One Redis for the module, so that one tower serves every test (``store`` is on it)."""
    return module_redis


@pytest.fixture
def run(cli, module_tower, tmp_path):
    """Run `controltower ARGS...` as an operator on the tower host would (token file)."""
    token_file = tmp_path / "token"
    token_file.write_text(module_tower.token + "\n")
    env = {**CLEAN_ENV, "CONTROLTOWER_API_URL": module_tower.api,
           "CONTROLTOWER_TOKEN_FILE": str(token_file),
           "CONTROLTOWER_DATA_DIR": str(tmp_path / "no-tower-here")}

    def invoke(*args: str, env_extra: dict[str, str | None] | None = None):
        return CliRunner(env={**env, **(env_extra or {})}).invoke(
            cli, list(args), catch_exceptions=False)
    return invoke


def add_node(store: ZoneStore, zone: str = "default", **kw) -> str:
    key = public_key_of(generate_private_key())
    store.register(zone, key, listen_port=51820, session="s", **kw)
    return key


def test_zone_create_then_list_shows_it(run):
    r = run("zone", "create", "zone-blue", "--cidr", "10.140.0.0/20",
            "--description", "Tenant - Zone Blue")
    assert r.exit_code == 0, r.output
    assert "created zone zone-blue (10.140.0.0/20)" in r.stdout
    secret = r.stdout.strip().splitlines()[-1]   # the tower manages agent ACLs by default
    assert len(secret) >= 24 and " " not in secret

    r = run("zone", "list")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "CIDR", "DESCRIPTION"]
    assert any(line.split()[:2] == ["zone-blue", "10.140.0.0/20"] and
               line.endswith("Tenant - Zone Blue") for line in lines)

    r = run("zone", "list", "--json")
    assert r.exit_code == 0
    assert {"Name": "zone-blue", "Description": "Tenant - Zone Blue",
            "IpCidr": "10.140.0.0/20"} in json.loads(r.stdout)

    r = run("zone", "show", "zone-blue", "--json")
    assert json.loads(r.stdout)["Nodes"] == 0
    r = run("zone", "show", "zone-blue")
    assert "CIDR:" in r.stdout and "10.140.0.0/20" in r.stdout


def test_duplicate_zone_shows_the_api_error_and_fails(run):
    run("zone", "create", "zone-dup", "--cidr", "10.141.0.0/24")
    r = run("zone", "create", "zone-dup", "--cidr", "10.141.0.0/24")
    assert r.exit_code == 1
    assert r.stderr.strip() == "Error: zone zone-dup already exists"
    assert r.stdout == ""


@pytest.mark.parametrize("args, message", [
    (("zone", "create", "zone-x", "--cidr", "10.0.0.1/24"),
     "CIDR '10.0.0.1/24' has host bits set; did you mean 10.0.0.0/24?"),
    (("zone", "show", "zone-nope"), "zone zone-nope does not exist"),
    (("leases", "zone-nope"), "zone zone-nope does not exist"),
    (("peer", "list", "--zone", "zone-nope"), "zone zone-nope does not exist"),
    (("peer", "show", "not-a-key"), "no node is named not-a-key"),
])
def test_api_errors_are_shown_as_they_are(run, args, message):
    r = run(*args)
    assert r.exit_code == 1
    assert r.stderr.strip() == f"Error: {message}"


def test_unknown_peer_is_a_404_message(run):
    key = public_key_of(generate_private_key())
    for command in ("show", "delete"):
        r = run("peer", command, key)
        assert r.exit_code == 1
        assert r.stderr.strip() == f"Error: peer {key} does not exist"


def test_peer_list_show_delete_and_leases(run, store):
    run("zone", "create", "zone-peers", "--cidr", "10.142.0.0/24")
    key = add_node(store, "zone-peers", endpoint="203.0.113.9:51820",
                   child_prefixes=["172.24.9.0/24"], hostname="node9")

    r = run("peer", "list", "--zone", "zone-peers")
    assert r.exit_code == 0, r.output
    header, row = r.stdout.splitlines()
    assert header.split()[:5] == ["ZONE", "NAME", "PUBLIC", "KEY", "ADDRESS"]
    assert row.split()[:7] == ["zone-peers", "-", key, "10.142.0.1", "203.0.113.9:51820",
                               "172.24.9.0/24", "-"]          # not enrolled: no name, nothing pending

    peers = json.loads(run("peer", "list", "--json").stdout)
    assert [p["PublicKey"] for p in peers if p["Zone"] == "zone-peers"] == [key]

    r = run("peer", "show", key, "--json")
    assert json.loads(r.stdout)["AllowedIPs"] == "10.142.0.1/32,172.24.9.0/24"
    r = run("peer", "show", key)
    assert "Allowed IPs:" in r.stdout and "10.142.0.1/32,172.24.9.0/24" in r.stdout

    r = run("leases", "zone-peers")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == "zone zone-peers  cidr 10.142.0.0/24  leased 1"
    assert [line.split() for line in lines[1:]] == [
        ["ADDRESS", "STATE"], ["10.142.0.0", "reserved"], ["10.142.0.1", "leased"],
        ["10.142.0.255", "reserved"]]
    assert json.loads(run("leases", "zone-peers", "--json").stdout)[0]["Cidr"] == "10.142.0.0/24"

    r = run("zone", "delete", "zone-peers")
    assert r.exit_code == 1 and "still has 1 nodes" in r.stderr

    r = run("peer", "delete", key)
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == (f"removed {key} from zone zone-peers "
                                "(released 10.142.0.1, 172.24.9.0/24)")
    assert run("peer", "list", "--zone", "zone-peers").stdout.splitlines()[1:] == []
    r = run("zone", "delete", "zone-peers", "--json")
    assert json.loads(r.stdout) == {"Deleted": "zone-peers"}


def test_leases_of_the_default_zone(run):
    r = run("leases", "default")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0].startswith("zone default  cidr 10.200.0.0/20")


def test_zone_delete_force_removes_nodes(run, store):
    run("zone", "create", "zone-force", "--cidr", "10.143.0.0/24")
    add_node(store, "zone-force")
    r = run("zone", "delete", "zone-force", "--force")
    assert r.exit_code == 0 and r.stdout.strip() == "deleted zone zone-force"


def test_rotate_secret(run):
    run("zone", "create", "zone-rot", "--cidr", "10.144.0.0/24")
    r = run("zone", "rotate-secret", "zone-rot", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["Name"] == "zone-rot" and data["AgentSecret"]
    r = run("zone", "rotate-secret", "zone-nope")
    assert r.exit_code == 1 and r.stderr.strip() == "Error: zone zone-nope does not exist"


def test_token_sources_and_auth_errors(run, module_tower, tmp_path):
    no_file = {"CONTROLTOWER_TOKEN_FILE": None}
    r = run("zone", "create", "zone-auth", "--cidr", "10.145.0.0/24", env_extra=no_file)
    assert r.exit_code == 1
    assert r.stderr.strip() == "Error: this endpoint needs 'Authorization: Bearer <admin token>'"
    r = run("zone", "create", "zone-auth", "--cidr", "10.145.0.0/24", "--token", "wrong")
    assert r.exit_code == 1 and r.stderr.strip() == "Error: the token is not valid"
    # --token wins over the token file; the environment works too
    r = run("zone", "create", "zone-auth", "--cidr", "10.145.0.0/24",
            env_extra={**no_file, "CONTROLTOWER_TOKEN": module_tower.token})
    assert r.exit_code == 0, r.output
    # on the tower host: the token the tower generated in its data directory
    r = run("zone", "delete", "zone-auth",
            env_extra={**no_file, "CONTROLTOWER_DATA_DIR": str(module_tower.data_dir)})
    assert r.exit_code == 0, r.output
    r = run("zone", "list", "--token-file", str(tmp_path / "missing"))
    assert r.exit_code == 2 and "cannot read" in r.stderr


def test_api_errors_are_in_the_domain_hierarchy(module_tower):
    """A status from the real tower becomes the error table's class for it."""
    client = ApiClient(module_tower.api, module_tower.token, timeout=10)
    with pytest.raises(NotFound) as missing:
        client.show_zone("zone-nowhere")
    with pytest.raises(InvalidInput) as invalid:
        client.create_zone("zone-bad", "10.0.0.1/24")
    client.create_zone("zone-twice", "10.142.0.0/24")
    with pytest.raises(Conflict) as twice:
        client.create_zone("zone-twice", "10.142.0.0/24")
    for caught, status in ((missing, 404), (invalid, 400), (twice, 409)):
        assert isinstance(caught.value, ApiError) and caught.value.status == status
        assert http_status(caught.value) == status
    assert str(missing.value) == missing.value.message == "zone zone-nowhere does not exist"
    with pytest.raises(Unavailable):
        ApiClient(f"http://127.0.0.1:{free_port()}", timeout=5).list_zones()


def test_unreachable_api_is_one_clear_line(run):
    url = f"http://127.0.0.1:{free_port()}"
    r = run("zone", "list", "--api-url", url)
    assert r.exit_code == admin.EXIT_UNREACHABLE
    assert r.stderr.strip() == f"Error: cannot reach the ControlTower at {url}: Connection refused"
    r = run("zone", "list", "--api-url", "ftp://example")
    assert r.exit_code == 2 and "http(s)://" in r.stderr
    r = run("zone", "list", "--api-url", url, "--ca-file", __file__)
    assert r.exit_code == 2 and "not https://" in r.stderr


# -- TLS: a stand-in https API that verifies client certificates ------------------------

def _cert(subject: str, key, issuer_key=None, issuer=None, ca: bool = False):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def _write(path: Path, cert=None, key=None) -> Path:
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return path


@pytest.fixture
def https_api(tmp_path):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test CA", ca_key, ca=True)
    files = {"ca": _write(tmp_path / "ca.pem", cert=ca)}
    for name in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        files[name] = _write(tmp_path / f"{name}.pem", cert=_cert(name, key, ca_key, ca.subject))
        files[f"{name}-key"] = _write(tmp_path / f"{name}.key", key=key)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = json.dumps([{"Name": "tls-zone", "Description": "",
                                "IpCidr": "10.9.0.0/24"}]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(files["ca"]))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(files["server"], files["server-key"])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", files
    server.shutdown()
    server.server_close()


def test_tls_ca_and_client_certificate(cli, https_api):
    url, files = https_api
    env = {**CLEAN_ENV, "CONTROLTOWER_DATA_DIR": "/nonexistent"}
    runner = CliRunner(env=env)
    args = ["zone", "list", "--api-url", url, "--timeout", "5"]
    r = runner.invoke(cli, args + ["--ca-file", str(files["ca"]), "--cert-file",
                                   str(files["client"]), "--key-file", str(files["client-key"])])
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[1].split() == ["tls-zone", "10.9.0.0/24", "-"]

    r = runner.invoke(cli, args)                                   # unknown CA
    assert r.exit_code == admin.EXIT_UNREACHABLE
    assert "TLS certificate verification failed" in r.stderr
    r = CliRunner(env={**env, "CONTROLTOWER_CA_FILE": str(files["ca"])}).invoke(cli, args)
    assert r.exit_code == admin.EXIT_UNREACHABLE                   # no client certificate
    assert r.stderr.startswith("Error: cannot reach the ControlTower at")


def test_joinkey_create_prints_the_key_alone_on_stdout(run):
    """KEY=$(controltower joinkey create ...) and the quickstart's paste take stdout: the
    key alone; what it is goes to stderr."""
    result = run("joinkey", "create", "default", "--reusable", "--expires", "10m")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\n") == 1 and result.stdout.startswith("ajk1:default:")
    assert "reusable" in result.stderr and "ajk1:" not in result.stderr


def test_policy_set_show_test_delete(run, store, tmp_path):
    zone = "zone-policy-cli"
    assert run("zone", "create", zone, "--cidr", "10.150.0.0/24").exit_code == 0
    a, b = (public_key_of(generate_private_key()) for _ in range(2))
    store.register(zone, a, listen_port=1, session="s", request_ip="10.150.0.10")
    store.register(zone, b, listen_port=1, session="s", request_ip="10.150.0.20")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rules": [{"from": ["tag:ops"], "to": ["*"], "ports": ["tcp/0"]}]}))
    refused = run("policy", "set", zone, str(bad))
    assert refused.exit_code == 1
    assert "rule 0 ports[0]: 'tcp/0': ports are 1-65535" in refused.output
    assert "no policy" in run("policy", "show", zone).output
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"rules": [
        {"from": ["10.150.0.10"], "to": ["10.150.0.20"], "ports": ["tcp/22"]},
        {"from": ["tag:ops"], "to": ["*"], "ports": ["icmp"]}]}))
    done = run("policy", "set", zone, str(good))
    assert done.exit_code == 0, done.output
    assert "2 rules in force" in done.output and "warning: tag:ops is on no node" in done.output
    assert '"tcp/22"' in run("policy", "show", zone).output
    allow = run("policy", "test", zone, "10.150.0.10", "10.150.0.20", "tcp/22")
    assert allow.output.startswith("allow: allowed by rule 0"), allow.output
    deny = run("policy", "test", zone, "10.150.0.20", "10.150.0.10", "tcp/22")
    assert deny.output.startswith("deny: no rule allows it"), deny.output
    as_json = json.loads(run("policy", "test", "--json", zone, "10.150.0.10", "10.150.0.20",
                             "tcp/23").output)
    assert as_json["Allow"] is False and as_json["Rule"] is None
    assert "policy deleted" in run("policy", "delete", zone).output
    assert "had no policy" in run("policy", "delete", zone).output
    assert run("peer", "tag", a, "ops").exit_code == 1     # not enrolled: a clear refusal


@pytest.mark.parametrize("args, words", [
    (["policy", "show", "bad zone"], "Invalid value for 'ZONE': zone name must be"),
    (["policy", "test", "default", "a", "b", "tcp/0"], "Invalid value for 'PORT': 'tcp/0': ports are"),
    (["policy", "test", "default", "a", "b", "tcp"], "name one packet"),
    (["peer", "tag", "somebody", "Not A Tag"], "Invalid value for '[TAG]...': a tag must be"),
])
def test_policy_arguments_are_checked_before_any_request(run, args, words):
    """clitypes: a bad zone, port or tag is a usage error (exit 2) naming the argument."""
    result = run(*args, env_extra={"CONTROLTOWER_API_URL": "http://127.0.0.1:9"})
    assert result.exit_code == 2, result.output
    assert words in result.output, result.output


@pytest.mark.parametrize("content, words", [
    (b'{"rules": [{"from": [NaN], "to": ["*"]}]}', "is not JSON: NaN is not JSON"),
    (b"{\xff}", "is not UTF-8 text"),
    (b"[" * 5000, "is not JSON"),
])
def test_policy_set_refuses_a_file_that_is_no_json_in_one_line(run, tmp_path, content, words):
    path = tmp_path / "policy.json"
    path.write_bytes(content)
    result = run("policy", "set", "default", str(path),
                 env_extra={"CONTROLTOWER_API_URL": "http://127.0.0.1:9"})
    assert result.exit_code == 2 and words in result.output, result.output
    assert "Traceback" not in result.output


def test_zone_set_shows_whole_days_as_days(run):
    assert run("zone", "create", "zone-days", "--cidr", "10.143.0.0/24").exit_code == 0
    r = run("zone", "set", "zone-days", "--key-expiry-days", "30")
    assert r.exit_code == 0, r.output
    assert [line.split(":", 1)[1].strip() for line in r.stdout.splitlines()
            if line.startswith("Key expiry (days):")] == ["30"]
    r = run("zone", "set", "zone-days", "--key-expiry-days", "0.5")
    assert "Key expiry (days): 0.5" in " ".join(r.stdout.split())
