#!/usr/bin/python3
"""Interoperability check: Debian's python3-websockets as the client of a running incsearchd.

Usage: interop.py PORT. Exits 0 when every step passes, 1 with a message otherwise.
"""
import asyncio
import json
import sys

import websockets


async def run(port):
    uri = f"ws://127.0.0.1:{port}/ws"
    async with websockets.connect(uri, compression="deflate", ping_interval=None) as ws:
        # permessage-deflate is offered and must be declined.
        if ws.extensions:
            raise AssertionError(f"extensions were accepted: {ws.extensions}")
        await ws.send(json.dumps({"q": "switz", "seq": 1}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if reply.get("type") != "results" or reply.get("seq") != 1:
            raise AssertionError(f"unexpected reply {reply}")
        names = [place.get("name") for place in reply["results"]]
        if "Switzerland" not in names:
            raise AssertionError(f"Switzerland missing from {names}")
        # A message in fragments, as an async iterator of text chunks.
        await ws.send(iter(['{"q":"nor', '", "seq"', ': 2}']))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if reply.get("seq") != 2:
            raise AssertionError(f"unexpected reply to fragments {reply}")
        pong = await ws.ping(b"interop")
        await asyncio.wait_for(pong, 5)
        await ws.close(code=1000, reason="done")
        if ws.close_code != 1000:
            raise AssertionError(f"close code {ws.close_code}, expected 1000")


def main():
    try:
        asyncio.run(run(int(sys.argv[1])))
    except Exception as error:  # report any failure as one line for the Check test
        print(f"interop.py: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print("interop.py: python3-websockets", websockets.__version__, "passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
