"""Starts the embedded server, writes a key, then dies without stopping it (a crash)."""

from __future__ import annotations

import os
import sys

import redis

from bookgen_events.embedded import EmbeddedRedis

server = EmbeddedRedis(sys.argv[1], port=0)
url = server.start()
client = redis.Redis.from_url(url)
client.set("survivor", "yes")
client.execute_command("BGREWRITEAOF")  # make sure the AOF holds the key before we "crash"
print(url, flush=True)
os._exit(9)
