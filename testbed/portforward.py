"""A TCP port on this machine's loopback that leads to a port inside a lab host, so a
browser outside the lab reaches the tower inside it (the dashboard's tests, and
``make demo --keep``).

    python -m testbed.portforward NS [--to 127.0.0.1:8080] [--port 0]

binds 127.0.0.1:<port> in the namespace it starts in, prints the port, then moves its
(only) thread into network namespace NS, where it dials each connection's other end.
Living in NS, it is ended with the lab (``testbed.netns.empty``) like any lab process.
Traffic stays on loopback and inside the lab.
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import socket
import subprocess
import sys

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"


def enter_netns(ns: str) -> None:
    """Move the calling thread into network namespace ``ns`` (its sockets from then on)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"{NETNS_DIR}/{ns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {ns}: {os.strerror(err)}")
    finally:
        os.close(fd)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def _serve(listener: socket.socket, host: str, port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            far_reader, far_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, far_writer), _pipe(far_reader, writer))

    server = await asyncio.start_server(handle, sock=listener)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.portforward",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("netns")
    parser.add_argument("--to", default="127.0.0.1:8080", help="host:port inside the namespace")
    parser.add_argument("--port", type=int, default=0, help="loopback port here (0: a free one)")
    args = parser.parse_args(argv)
    host, _, port = args.to.rpartition(":")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(64)
    enter_netns(args.netns)          # the listener stays where it was bound
    print(listener.getsockname()[1], flush=True)
    try:
        asyncio.run(_serve(listener, host, int(port)))
    except KeyboardInterrupt:
        pass
    return 0


def start(ns: str, to: str = "127.0.0.1:8080", detach: bool = False) -> tuple[subprocess.Popen, int]:
    """Run the forwarder for lab namespace ``ns``; (its process, the loopback port).
    ``detach``: in a session of its own, so it outlives the caller (until the lab goes)."""
    proc = subprocess.Popen([sys.executable, "-m", "testbed.portforward", ns, "--to", to],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=detach)
    line = proc.stdout.readline().strip()
    if not line.isdigit():
        proc.kill()
        raise RuntimeError(f"the port forwarder into {ns} did not start")
    return proc, int(line)


if __name__ == "__main__":
    sys.exit(main())
