"""fakeredis' TCP server as a stand-in `redis-server` for machines without one.

Usage: python -m tests.support.fake_redis_server PORT
"""

from __future__ import annotations

import sys

from fakeredis import TcpFakeServer


def main() -> None:
    port = int(sys.argv[1])
    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    server.serve_forever()


if __name__ == "__main__":
    main()
