"""A bare asyncio policy server: the practical ceiling for a Python policy daemon.

    python -m bench.bare_server --listen 127.0.0.1:PORT

It does what any policy daemon must do and nothing more: persistent connections
with asyncio streams, requests read up to their blank line and parsed into a dict
of attributes, and ``action=DUNNO`` for each. ``--uvloop`` runs it on uvloop's
event loop, as postwarden-policyd runs when uvloop is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib

REPLY = b"action=DUNNO\n\n"
READ_CHUNK = 16384


def parse(request: bytes) -> dict[str, str]:
    """``name=value`` lines into a dict, as a real server would before deciding."""
    attributes = {}
    for line in request.split(b"\n"):
        name, _, value = line.partition(b"=")
        attributes[name.decode("ascii", "replace")] = value.decode("utf-8", "replace")
    return attributes


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    buffer = b""
    try:
        while data := await reader.read(READ_CHUNK):
            buffer += data
            while (end := buffer.find(b"\n\n")) >= 0:
                parse(buffer[:end])
                buffer = buffer[end + 2 :]
                writer.write(REPLY)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main_async(listen: str) -> None:
    host, _, port = listen.rpartition(":")
    server = await asyncio.start_server(serve, host, int(port), reuse_address=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--listen", default="127.0.0.1:20040")
    parser.add_argument("--uvloop", action="store_true", help="on uvloop's event loop")
    args = parser.parse_args()
    if args.uvloop:
        importlib.import_module("uvloop").install()
    asyncio.run(main_async(args.listen))


if __name__ == "__main__":
    main()
