"""Kernel WireGuard: the link through rtnetlink, its configuration through the
``wireguard`` generic-netlink family (both via pyroute2).

Each call is one ``WG_CMD_SET_DEVICE`` message. pyroute2's ``WireGuard.set`` carries
at most one peer per message, so ``upsert_peers`` sends one message per peer; it still
counts as one operation of the API (one reconcile step), and a netlink round trip costs
tens of microseconds.
"""
from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterable
from typing import Any

from pyroute2 import IPRoute, WireGuard
from pyroute2.netlink.exceptions import NetlinkError

from wire.messages import format_endpoint
from wire.proof import decode_key

from .device import Device, DeviceState, PeerConfig
from .device_errors import DeviceError
from .wgfields import (PeerReading, canonical_cidr, parse_endpoint,
                       validate_ifname, validate_keepalive, validate_port)

__all__ = ["KernelDevice", "peer_request", "state_from_messages"]

log = logging.getLogger(__name__)


class KernelDevice(Device):
    """A kernel WireGuard interface. Not thread-safe; ``close()`` releases the sockets."""

    def __init__(self, name: str) -> None:
        super().__init__(validate_ifname(name))
        self._ipr: IPRoute | None = None
        self._wg: WireGuard | None = None

    def close(self) -> None:
        for sock in (self._ipr, self._wg):
            if sock is not None:
                sock.close()
        self._ipr = self._wg = None

    @property
    def ipr(self) -> IPRoute:
        if self._ipr is None:
            self._ipr = IPRoute()
        return self._ipr

    @property
    def wg(self) -> WireGuard:
        if self._wg is None:
            self._wg = WireGuard()
        return self._wg

    # -- lifecycle -----------------------------------------------------------------------

    def _link(self) -> Any | None:
        found = self._call("look up the interface", self.ipr.link_lookup, ifname=self.name)
        if not found:
            return None
        links = self._call("read the interface", lambda: list(self.ipr.get_links(found[0])))
        return links[0] if links else None

    def exists(self) -> bool:
        return self._link() is not None

    def create(self) -> None:
        link = self._link()
        if link is not None:
            kind = _link_kind(link)
            if kind != "wireguard":
                raise DeviceError(f"{self.name} exists but is not a kernel WireGuard "
                                  f"interface (kind {kind or 'unknown'})")
            return
        try:
            self.ipr.link("add", ifname=self.name, kind="wireguard")
        except NetlinkError as exc:
            if exc.code == errno.EOPNOTSUPP:
                raise DeviceError(f"{self.name}: this kernel has no WireGuard support "
                                  "(no wireguard module); use the userspace backend") from None
            if exc.code == errno.EEXIST:
                return
            raise _error(self.name, "create the interface", exc) from None
        log.info("%s created (kernel WireGuard)", self.name)

    def destroy(self) -> None:
        link = self._link()
        if link is None:
            return
        try:
            self.ipr.link("del", index=link["index"])
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise _error(self.name, "delete the interface", exc) from None
        log.info("%s removed", self.name)

    # -- operations ----------------------------------------------------------------------

    def read(self) -> DeviceState:
        messages = self._call("read the device", lambda: list(self.wg.info(self.name)))
        return state_from_messages(messages)

    def set_identity(self, private_key: str, listen_port: int) -> None:
        decode_key(private_key, "private key")
        validate_port(listen_port)
        self.operations += 1
        self._call("set the identity", self.wg.set, self.name, private_key=private_key,
                   listen_port=listen_port)

    def upsert_peer(self, peer: PeerConfig) -> None:
        request = peer_request(peer)
        self.operations += 1
        self._call(f"set peer {peer.public_key}", self.wg.set, self.name, peer=request)

    def upsert_peers(self, peers: Iterable[PeerConfig]) -> None:
        """Add or update many peers; counts as one operation (see module doc)."""
        requests = [peer_request(peer) for peer in peers]
        if not requests:
            return
        self.operations += 1
        for request in requests:
            self._call(f"set peer {request['public_key']}", self.wg.set, self.name,
                       peer=request)

    def remove_peer(self, public_key: str) -> None:
        decode_key(public_key, "peer public key")
        self.operations += 1
        self._call(f"remove peer {public_key}", self.wg.set, self.name,
                   peer={"public_key": public_key, "remove": True})

    def _call(self, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except NetlinkError as exc:
            raise _error(self.name, what, exc) from None


def peer_request(peer: PeerConfig) -> dict[str, Any]:
    """The pyroute2 ``WireGuard.set(peer=...)`` structure for an upsert."""
    decode_key(peer.public_key, "peer public key")
    request: dict[str, Any] = {
        "public_key": peer.public_key,
        "persistent_keepalive": validate_keepalive(peer.keepalive),
        "replace_allowed_ips": True,
        "allowed_ips": [canonical_cidr(cidr) for cidr in peer.allowed_ips],
    }
    if peer.endpoint is not None:
        request["endpoint_addr"], request["endpoint_port"] = parse_endpoint(peer.endpoint)
    return request


def state_from_messages(messages: Iterable[Any]) -> DeviceState:
    """Merge the messages of a ``WG_CMD_GET_DEVICE`` dump into a DeviceState.

    A large device spans several messages, and one peer's allowed IPs may continue in
    the next message (repeating only its public key).
    """
    state = DeviceState()
    readings: dict[str, PeerReading] = {}
    for msg in messages:
        public_key = msg.get_attr("WGDEVICE_A_PUBLIC_KEY")
        if public_key is not None:              # sent only when a private key is set
            state.public_key = _text(public_key)
        port = msg.get_attr("WGDEVICE_A_LISTEN_PORT")
        if port is not None:
            state.listen_port = int(port)
        for attrs in msg.get_attr("WGDEVICE_A_PEERS") or ():
            key = _text(attrs.get_attr("WGPEER_A_PUBLIC_KEY"))
            reading = readings.setdefault(key, PeerReading(key))
            _merge_peer(reading, attrs)
    for key, reading in readings.items():
        state.peers[key] = reading.config()
        state.stats[key] = reading.stats()
    return state


def _merge_peer(reading: PeerReading, attrs: Any) -> None:
    endpoint = attrs.get_attr("WGPEER_A_ENDPOINT")
    if endpoint is not None and endpoint.get("port"):
        reading.endpoint = format_endpoint(endpoint["addr"], endpoint["port"])
    keepalive = attrs.get_attr("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL")
    if keepalive is not None:
        reading.keepalive = int(keepalive)
    handshake = attrs.get_attr("WGPEER_A_LAST_HANDSHAKE_TIME")
    if handshake is not None:
        reading.handshake_sec = int(handshake["tv_sec"])
        reading.handshake_nsec = int(handshake["tv_nsec"])
    for name, attr in (("rx_bytes", "WGPEER_A_RX_BYTES"), ("tx_bytes", "WGPEER_A_TX_BYTES")):
        value = attrs.get_attr(attr)
        if value is not None:
            setattr(reading, name, int(value))
    for allowed in attrs.get_attr("WGPEER_A_ALLOWEDIPS") or ():
        cidr = allowed.get("addr")
        if cidr:
            reading.allowed_ips.append(cidr)


def _text(value: Any) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else str(value)


def _link_kind(link: Any) -> str | None:
    info = link.get_attr("IFLA_LINKINFO")
    return None if info is None else info.get_attr("IFLA_INFO_KIND")


def _error(name: str, what: str, exc: NetlinkError) -> DeviceError:
    if exc.code == errno.ENOENT and what.startswith(("read", "set", "remove")):
        return DeviceError(f"{name}: cannot {what}: the kernel has no WireGuard "
                           "generic-netlink family (no wireguard module)")
    if exc.code == errno.ENODEV:
        return DeviceError(f"{name}: cannot {what}: no such WireGuard interface")
    return DeviceError(f"{name}: cannot {what}: {os.strerror(exc.code)}")
