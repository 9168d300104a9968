#!/usr/bin/python3
"""A wss and https client of nginx in front of incsearchd, driven by tests/check_nginx.c.

Usage: nginx_client.py PORT CAFILE ORIGIN. It connects to 127.0.0.1:PORT, trusts only the
certificate in CAFILE, and reads one command per line on stdin. It replies to each with one
line on stdout, "ok ..." or "error ...":

  open N          open N more WebSocket connections with Origin ORIGIN, one after the other,
                  and on each send a query and wait for its results
  drop I          close connection I (counted from 0 in the order opened) with 1000
  close           close every open connection with 1000
  handshake ORIG  try a WebSocket handshake with Origin ORIG and reply "ok STATUS"
  get PATH        GET PATH over https and reply "ok STATUS"

It exits at the end of stdin.
"""
import asyncio
import http.client
import json
import ssl
import sys

import websockets

WAIT_SECONDS = 10


class Client:
    def __init__(self, port, cafile, origin):
        self.port = port
        self.origin = origin
        self.uri = f"wss://127.0.0.1:{port}/ws"
        self.tls = ssl.create_default_context(cafile=cafile)
        self.connections = []
        self.seq = 0

    async def open(self, count):
        for _ in range(count):
            ws = await asyncio.wait_for(
                websockets.connect(self.uri, ssl=self.tls, origin=self.origin,
                                   ping_interval=None),
                WAIT_SECONDS)
            self.connections.append(ws)
            self.seq += 1
            await ws.send(json.dumps({"q": "switz", "seq": self.seq}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), WAIT_SECONDS))
            if reply.get("type") != "results" or reply.get("seq") != self.seq:
                raise AssertionError(f"unexpected reply {reply}")
        return "ok"

    async def drop(self, index):
        await self.connections[index].close(code=1000)
        self.connections[index] = None
        return "ok"

    async def close(self):
        # A connection that the instance behind it closed on its way down is already closed.
        for ws in self.connections:
            if ws is not None:
                await ws.close(code=1000)
        self.connections = []
        return "ok"

    async def handshake(self, origin):
        try:
            ws = await asyncio.wait_for(
                websockets.connect(self.uri, ssl=self.tls, origin=origin, ping_interval=None),
                WAIT_SECONDS)
        except websockets.exceptions.InvalidStatusCode as error:
            return f"ok {error.status_code}"
        await ws.close(code=1000)
        return "ok 101"

    def get(self, path):
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.tls,
                                           timeout=WAIT_SECONDS)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            return f"ok {response.status}"
        finally:
            conn.close()

    async def run(self, line):
        words = line.split()
        if words[0] == "open" and len(words) == 2:
            return await self.open(int(words[1]))
        if words[0] == "drop" and len(words) == 2:
            return await self.drop(int(words[1]))
        if words[0] == "close" and len(words) == 1:
            return await self.close()
        if words[0] == "handshake" and len(words) == 2:
            return await self.handshake(words[1])
        if words[0] == "get" and len(words) == 2:
            return self.get(words[1])
        return f"error unknown command {line!r}"


async def main():
    client = Client(int(sys.argv[1]), sys.argv[2], sys.argv[3])
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if line == "":
            break
        try:
            reply = await client.run(line)
        except Exception as error:  # report any failure as one line to the Check test
            reply = f"error {line}: {type(error).__name__}: {error}"
        print(reply, flush=True)
    await client.close()


if __name__ == "__main__":
    asyncio.run(main())
