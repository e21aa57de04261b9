"""nftables text for one node's rules (pure): the whole table, a set-element delta, the
table's removal. nft applies each text as one transaction: all of it, or on any error
nothing.

Our table, ``inet apexmesh_<interface>``, hooks input and forward with ``policy accept``
and jumps into its own chains only for packets that arrived on the mesh interface; the
default deny is the last rule of those chains. Another table is never named, so its
rules stay as they are (and a drop anywhere stays final: our accept cannot override it).
"""
from __future__ import annotations

from typing import Iterable

from .rules import FORWARD, INPUT, Accept, Contents, Delta, Plan

TABLE_PREFIX = "apexmesh_"
HOOKS = ((INPUT, "input"), (FORWARD, "forward"))


def table_name(interface: str) -> str:
    return TABLE_PREFIX + "".join(c if c.isalnum() or c == "_" else "_" for c in interface)


def _elements(texts: Iterable[str]) -> str:
    """Addresses and prefixes as nft reads them, in a stable (text) order: parsing each
    to sort numerically costs more than everything else at 10,000 elements."""
    return "{ " + ", ".join(sorted(texts)) + " }"


def accept_line(accept: Accept) -> str:
    ip = "ip" if accept.family == 4 else "ip6"
    parts = []
    if accept.source_set:
        parts.append(f"{ip} saddr @{accept.source_set}")
    elif accept.source_nets:
        parts.append(f"{ip} saddr {_elements(accept.source_nets)}")
    if accept.dest_nets:
        parts.append(f"{ip} daddr {_elements(accept.dest_nets)}")
    if not parts:
        parts.append("meta nfproto " + ("ipv4" if accept.family == 4 else "ipv6"))
    if accept.proto in ("tcp", "udp"):
        if accept.ports:
            ports = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in accept.ports)
            parts.append(f"{accept.proto} dport {{ {ports} }}")
        else:
            parts.append(f"meta l4proto {accept.proto}")
    elif accept.proto == "icmp":
        parts.append("meta l4proto " + ("icmp" if accept.family == 4 else "ipv6-icmp"))
    parts.append(f'counter accept comment "rule {accept.rule}"')
    return " ".join(parts)


def table(interface: str, plan: Plan, contents: Contents) -> str:
    """Our whole table as ``plan`` and ``contents`` say, replacing any table of ours
    (add + delete + define, one transaction)."""
    name = table_name(interface)
    lines = [f"add table inet {name}", f"delete table inet {name}", f"table inet {name} {{"]
    for decl in plan.sets:
        body = f"type {'ipv4_addr' if decl.family == 4 else 'ipv6_addr'};"
        if decl.interval:
            body += " flags interval;"
        elements = contents.elements(decl.name)
        if elements:
            body += f" elements = {_elements(elements)}"
        lines.append(f"  set {decl.name} {{ {body} }}")
    for chain, hook in HOOKS:
        lines.append(f"  chain {hook} {{ type filter hook {hook} priority filter; "
                     f'policy accept; iifname "{interface}" jump mesh_{chain}; }}')
        lines.append(f"  chain mesh_{chain} {{")
        lines.append("    ct state established,related ct direction reply accept")
        lines.append("    ct state related accept")
        lines.append("    ct state invalid drop")
        lines.extend("    " + accept_line(a) for a in plan.accepts if a.chain == chain)
        lines.append("    meta l4proto tcp counter reject with tcp reset")
        lines.append("    counter reject with icmpx admin-prohibited")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def delta(interface: str, change: Delta) -> str:
    """The element changes (deletes first); empty text when there are none."""
    name = table_name(interface)
    lines = [f"delete element inet {name} {s} {_elements(e)}"
             for s, e in sorted(change.delete.items()) if e]
    lines += [f"add element inet {name} {s} {_elements(e)}"
              for s, e in sorted(change.add.items()) if e]
    return "".join(line + "\n" for line in lines)


def removal(interface: str) -> str:
    """Delete our table, whether or not it is there."""
    name = table_name(interface)
    return f"add table inet {name}\ndelete table inet {name}\n"
