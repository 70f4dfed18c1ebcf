"""The production stream-edge (`sluice edge`: the whole app, its middleware and server settings) for the benchmark.
`python -m bench.real_edge --port P --nats URL`; other settings come from the environment as in production."""

from __future__ import annotations

import argparse
import os
import resource

from stream_edge.main import main as edge_main


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--nats", required=True)
    args = parser.parse_args()
    os.environ["SLUICE_NATS_URL"] = args.nats
    os.environ["SLUICE_HTTP_PORT"] = str(args.port)
    os.environ.setdefault("SLUICE_MAX_STREAMS", "100000")
    # One tenant (the default) opens every stream and makes every task of a bench: the per-tenant limits, which
    # would refuse most of them, are off unless the bench's environment sets them.
    for limit in ("SLUICE_TENANT_MAX_ACTIVE", "SLUICE_TENANT_RATE", "SLUICE_TENANT_MAX_STREAMS"):
        os.environ.setdefault(limit, "0")
    # A bench's tasks are made to be streamed, not run: the reconciler, which reads every record of an unfinished
    # task on each sweep, would spend the edge's CPU re-checking thousands of them.
    os.environ.setdefault("SLUICE_RECONCILE_INTERVAL_S", "0")
    os.environ.setdefault("SLUICE_LOG_LEVEL", "warning")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    edge_main()


if __name__ == "__main__":
    main()
