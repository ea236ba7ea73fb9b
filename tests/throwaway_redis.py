"""The command line of a throwaway Redis server on loopback: no snapshots, no
append-only file, its files in a directory of the caller's."""

from __future__ import annotations

from pathlib import Path


def redis_server_command(port: int, directory: Path, *extra: str) -> list[str]:
    return [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        *extra,
        "--dir",
        str(directory),
    ]
