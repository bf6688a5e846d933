"""Command line: ``python -m airflow_agentchat.devserver --port 0`` (or ``agentchat-devserver``).

Binds the socket itself (so ``--port 0`` can report the port it got), prints exactly one line
``agentchat devserver listening on http://127.0.0.1:PORT`` to stdout, then serves with uvicorn
(uvloop + httptools, no access log, one process) until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; the API key may also come from ``AGENTCHAT_DEVSERVER_KEY``."""
    parser = argparse.ArgumentParser(prog="agentchat-devserver", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8088, help="port; 0 picks a free one (default 8088)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay added to every completion")
    parser.add_argument("--chunk-latency-ms", type=float, default=0.0, help="delay before every stream chunk")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("AGENTCHAT_DEVSERVER_KEY"),
        help="require 'Authorization: Bearer KEY' (default: $AGENTCHAT_DEVSERVER_KEY; unset = no auth)",
    )
    args = parser.parse_args(argv)
    if not _loopback(args.host):
        parser.error(f"--host must be a loopback address, got {args.host!r}")
    return args


def main(argv: list[str] | None = None) -> None:
    """Run the dev server in the foreground."""
    args = parse_args(argv)
    import uvicorn

    from airflow_agentchat.devserver.app import Settings, create_app

    settings = Settings(api_key=args.api_key or None, latency_ms=args.latency_ms)
    settings.chunk_latency_ms = args.chunk_latency_ms
    host = "127.0.0.1" if args.host == "localhost" else args.host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, args.port))
    sock.listen(4096)  # connections queue from now on, before uvicorn accepts
    port = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    config = uvicorn.Config(
        create_app(settings),
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        proxy_headers=False,
        server_header=False,
        date_header=False,
        backlog=4096,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=2,  # open streams must not keep a stopping server alive
    )
    server = uvicorn.Server(config)
    sys.stdout.write(f"agentchat devserver listening on http://{shown}:{port}\n")
    sys.stdout.flush()
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
