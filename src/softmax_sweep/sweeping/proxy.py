"""`softmax-sweep-storage-proxy`: Optuna's gRPC storage proxy in front of a database, so that many
workers share one study through a few database connections (workers use --storage grpc://HOST:PORT)."""
from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from typing import Optional

from softmax_sweep.cli import run_cli

log = logging.getLogger("softmax_sweep.sweep")


def serve(storage_url: str, host: str, port: int) -> None:
    from optuna.storages import run_grpc_proxy_server

    from optuna_pruning.storages import make_storage
    from optuna_pruning.urls import mask_password

    storage = make_storage(storage_url)
    log.info("serving Optuna storage %s on grpc://%s:%d (Ctrl-C stops)", mask_password(storage_url), host, port)
    run_grpc_proxy_server(storage, host=host, port=port)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="softmax-sweep-storage-proxy", description=__doc__)
    parser.add_argument("--storage", required=True, metavar="URL",
                        help="the database the proxy serves: postgresql://..., mysql://..., sqlite:///...")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for all, "
                             "on a private network: the proxy has no authentication)")
    parser.add_argument("--port", type=int, default=13000, help="port to listen on (default 13000)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    run_cli(lambda: serve(args.storage, args.host, args.port))


if __name__ == "__main__":
    main()
