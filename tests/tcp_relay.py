"""A TCP relay for fault tests, run as its own process in front of a server on loopback.

`python -m tests.tcp_relay TARGET_PORT [PORT]` listens on 127.0.0.1:PORT (a free port when 0 or
absent), prints the port it bound, and forwards every connection to 127.0.0.1:TARGET_PORT.
Killing the relay is what a client sees when its server dies (open connections reset, the port
refuses new ones) while the server behind keeps its state, so a test can look at what
survived once the relay is started again on the same port.
"""

from __future__ import annotations

import asyncio
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def _serve(target_port: int, port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(
            _pipe(reader, upstream_writer), _pipe(upstream_reader, writer), return_exceptions=True
        )

    server = await asyncio.start_server(handle, "127.0.0.1", port, reuse_address=True)
    sys.stdout.write(f"{server.sockets[0].getsockname()[1]}\n")
    sys.stdout.flush()
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_serve(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0))
