"""wg-quick files: pure render/parse round trip; secret files are 0600 from creation."""
from __future__ import annotations

import os
import stat

import pytest

from aircrew.device import PeerConfig
from aircrew.wgconf import WgQuickConfig, parse, render
from wire import secretfile
from wire.secretfile import write_secret as write_secret_file
from wire.errors import InvalidInput
from wire.proof import generate_private_key, public_key_of


def new_key() -> str:
    return public_key_of(generate_private_key())


def sample() -> WgQuickConfig:
    return WgQuickConfig(
        private_key=generate_private_key(),
        listen_port=51820,
        addresses=("10.140.0.5/16",),
        peers=(PeerConfig(new_key(), "198.51.100.7:51820", ("10.140.0.7/32", "10.200.1.0/24"), 25),
               PeerConfig(new_key(), "[2001:db8::9]:4500", ("fd00:140::9/128",), 0),
               PeerConfig(new_key(), None, (), 25)),
    )


def test_round_trip():
    config = sample()
    text = render(config)
    assert parse(text) == config
    assert render(parse(text)) == text


def test_render_is_wg_quick_shaped():
    config = sample()
    text = render(config)
    assert text.splitlines()[1:5] == ["[Interface]", f"PrivateKey = {config.private_key}",
                                      "ListenPort = 51820", "Address = 10.140.0.5/16"]
    peer = config.peers[0]
    assert (f"[Peer]\nPublicKey = {peer.public_key}\nEndpoint = 198.51.100.7:51820\n"
            "AllowedIPs = 10.140.0.7/32, 10.200.1.0/24\nPersistentKeepalive = 25\n") in text
    assert text.count("PersistentKeepalive") == 2          # keepalive 0 is omitted


def test_parse_hand_written_file():
    private, peer = generate_private_key(), new_key()
    text = f"""
    # a comment
    [interface]
    privatekey = {private}   # trailing comment
    ListenPort=51000
    Address = 10.1.0.2/24, fd00::2/64
    DNS = 192.0.2.53
    PostUp = true

    [Peer]
    PublicKey = {peer}
    AllowedIPs = 10.1.0.3/32
    AllowedIPs = 10.9.0.5/24 ,fd00::/64
    Endpoint = vpn.example.com:51820
    PersistentKeepalive = off
    """
    config = parse(text)
    assert config.private_key == private and config.listen_port == 51000
    assert config.addresses == ("10.1.0.2/24", "fd00::2/64")
    assert config.peers == (PeerConfig(peer, "vpn.example.com:51820",
                                       ("10.1.0.3/32", "10.9.0.0/24", "fd00::/64"), 0),)


@pytest.mark.parametrize("text, message", [
    ("", "no \\[Interface\\]"),
    ("PrivateKey = x\n", "outside any section"),
    ("[Interface]\nListenPort = 1\n", "no privatekey"),
    ("[Interface]\nPrivateKey = abc\n", "PrivateKey"),
    ("[Interface]\nPrivateKey = {k}\n[Peer]\nEndpoint = 1.2.3.4:5\n", "no publickey"),
    ("[Interface]\nPrivateKey = {k}\nListenPort = many\n", "ListenPort"),
    ("[Interface]\nPrivateKey = {k}\nListenPort = 99999\n", "listen port"),
    ("[Interface]\nPrivateKey = {k}\n[Peer]\nPublicKey = {k}\nAllowedIPs = 10.0.0.0/33\n",
     "not a valid CIDR"),
    ("[Interface]\nPrivateKey = {k}\n[Wat]\n", "unknown section"),
    ("[Interface]\nPrivateKey = {k}\njust words\n", "line 3"),
])
def test_parse_errors_name_the_problem(text, message):
    with pytest.raises(InvalidInput, match=message):
        parse(text.format(k=generate_private_key()))


def test_render_refuses_bad_values():
    with pytest.raises(InvalidInput):
        render(WgQuickConfig(private_key="nope"))
    with pytest.raises(InvalidInput):
        render(WgQuickConfig(generate_private_key(),
                             peers=(PeerConfig(new_key(), "1.2.3.4:5\nPostUp = rm -rf /", ()),)))


def test_secret_file_is_0600_from_creation(tmp_path, monkeypatch):
    created = []
    real_open = os.open

    def spy(path, flags, mode=0o777, *args, **kwargs):
        if flags & os.O_CREAT:
            created.append((str(path), flags, mode))
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(secretfile.os, "open", spy)
    target = tmp_path / "wireguard" / "wg0.conf"
    old_umask = os.umask(0)
    try:
        write_secret_file(target, "secret one\n")
    finally:
        os.umask(old_umask)
    assert target.read_text() == "secret one\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    # Every file it created was created 0600 and exclusively (never an existing file).
    assert created and all(mode == 0o600 and flags & os.O_EXCL for _, flags, mode in created)


def test_secret_file_replaces_atomically(tmp_path):
    target = tmp_path / "wg0.conf"
    target.write_text("old\n")
    target.chmod(0o644)
    inode = target.stat().st_ino
    write_secret_file(target, "new\n")
    assert target.read_text() == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.stat().st_ino != inode                   # renamed over, not rewritten
    assert [p.name for p in tmp_path.iterdir()] == ["wg0.conf"]  # no temp file left


def test_secret_file_failure_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "wg0.conf"
    target.write_text("old\n")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(secretfile.os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_secret_file(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["wg0.conf"]
