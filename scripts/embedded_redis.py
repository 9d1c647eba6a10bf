"""An embedded Redis-compatible server (fakeredis over TCP) for machines without `redis-server`.

A convenience for a quick start and for tests on a bare machine, never the test of record:
`start_services.sh` uses it only when no Redis is installed or configured. Server-side scripts
work through fakeredis' `lua` extra.

Usage: python scripts/embedded_redis.py [--host 127.0.0.1] [--port 6379]
"""

from __future__ import annotations

import argparse
import logging

from fakeredis import TcpFakeServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6379)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = TcpFakeServer((args.host, args.port), server_type="redis")
    logging.info("embedded Redis (fakeredis) listening on %s:%d", args.host, args.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
