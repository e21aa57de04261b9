"""The lease map of a zone's CIDR (pure): at most ``MAX_CELLS`` cells, each one address
(small zones) or a block of addresses, with how many are leased and to whom."""
from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from ipam import cidr as cidrs

MAX_CELLS = 256


@dataclass(frozen=True)
class Cell:
    first: str
    last: str
    size: int
    used: int
    reserved: int          # network / broadcast: never leased
    holder: str            # the holder's label when the cell is one leased address

    @property
    def state(self) -> str:
        if self.reserved == self.size:
            return "reserved"
        if not self.used:
            return "free"
        return "full" if self.used + self.reserved == self.size else "part"

    @property
    def title(self) -> str:
        where = self.first if self.size == 1 else f"{self.first} – {self.last}"
        if self.state == "reserved":
            return f"{where}: reserved"
        if self.size == 1:
            return f"{where}: {'leased to ' + self.holder if self.used else 'free'}"
        return f"{where}: {self.used} of {self.size} leased"


@dataclass(frozen=True)
class LeaseMap:
    cidr: str
    cells: tuple[Cell, ...]
    per_cell: int
    used: int
    usable: int

    @property
    def percent(self) -> float:
        return 100.0 * self.used / self.usable if self.usable else 0.0


def usage(cidr: str, used: int) -> tuple[int, int, float]:
    """(leased, usable, percent) of a zone."""
    usable = cidrs.pool_size(ipaddress.ip_network(cidr))
    return used, usable, (100.0 * used / usable if usable else 0.0)


def lease_map(cidr: str, held: Mapping[str, str], max_cells: int = MAX_CELLS) -> LeaseMap:
    """``held``: leased address -> label of its holder."""
    net = ipaddress.ip_network(cidr)
    size = net.num_addresses
    per_cell = max(1, -(-size // max_cells))
    count = -(-size // per_cell)
    base = int(net.network_address)
    used = [0] * count
    holder = [""] * count
    for address, label in held.items():
        try:
            offset = int(ipaddress.ip_address(address)) - base
        except ValueError:
            continue
        if 0 <= offset < size:
            used[offset // per_cell] += 1
            holder[offset // per_cell] = label
    reserved = [0] * count
    reserved[0] += 1                                  # network address
    if net.version == 4:
        reserved[(size - 1) // per_cell] += 1         # broadcast
    cells = []
    for i in range(count):
        first = base + i * per_cell
        last = min(first + per_cell, base + size) - 1
        cells.append(Cell(str(ipaddress.ip_address(first)), str(ipaddress.ip_address(last)),
                          last - first + 1, used[i], reserved[i],
                          holder[i] if per_cell == 1 else ""))
    return LeaseMap(str(net), tuple(cells), per_cell, sum(used), cidrs.pool_size(net))
