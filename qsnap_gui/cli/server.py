"""``qsnap server status|stop|path``: the embedded PostgreSQL server, without opening a database."""

from __future__ import annotations

import argparse
import json

from qsnap_gui.store.embedded import (
    ServerStatus,
    data_dir,
    linger_seconds,
    server_status,
    stop_server,
)


def human_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = n / 1024
    for unit in ("kB", "MB", "GB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def status_lines(status: ServerStatus) -> list[str]:
    running = status.running
    if running is None:
        lines = ["embedded server: not running"]
    else:
        where = f", socket in {running.socket_dir}" if running.socket_dir else ""
        lines = [f"embedded server: running (pid {running.pid}, port {running.port}{where})"]
    lines.append(
        f"data folder: {status.data_dir} ({human_bytes(status.data_bytes)}, "
        f"of which WAL {human_bytes(status.wal_bytes)})"
    )
    if running is not None:
        if status.users:
            lines.append(f"used by: qsnap process {', '.join(map(str, status.users))}")
        else:
            linger = f"{linger_seconds():.0f} s"
            lines.append(
                f"used by: no qsnap process (the server stops {linger} after its last user)"
                if status.watchdog
                else "used by: no qsnap process, and no watchdog: `qsnap server stop` stops it"
            )
        if status.settings:
            lines.append("sizing: " + ", ".join(f"{k} {v}" for k, v in status.settings.items()))
    return lines


def cmd_server(args: argparse.Namespace, _db: None) -> int:
    if args.action == "path":
        print(data_dir(create=False))
        return 0
    if args.action == "stop":
        stopped = stop_server(force=args.force)
        print("stopped the embedded server" if stopped else "the embedded server is not running")
        return 0
    status = server_status()
    if args.json:
        running = status.running
        print(
            json.dumps(
                {
                    "running": running is not None,
                    "pid": running.pid if running else None,
                    "port": running.port if running else None,
                    "socket_dir": running.socket_dir if running else None,
                    "data_dir": str(status.data_dir),
                    "data_bytes": status.data_bytes,
                    "wal_bytes": status.wal_bytes,
                    "users": status.users,
                    "watchdog": status.watchdog,
                    "settings": status.settings,
                },
                indent=2,
            )
        )
    else:
        print("\n".join(status_lines(status)))
    return 0
