#!/usr/bin/env python3
"""A TCP proxy for `make chaos`: it stands for the DNS name, cloud proxy or
NAT between the instances and Redis.

    tcp_proxy.py LISTEN_PORT UPSTREAM_FILE

UPSTREAM_FILE holds the upstream port, read again for every new connection:
write another port and new connections go there while open ones stay where
they were (a DNS name or proxy moved to a promoted replica).
SIGUSR1: every open connection stops forwarding, in both directions, and
stays open (a NAT that forgot the flow: no RST, nothing arrives); new
connections work.
"""
import asyncio
import signal
import sys

generation = 0


async def pump(reader, writer, mine):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            if generation != mine:
                await asyncio.Event().wait()  # hold both ends, forward nothing
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def main(listen_port, upstream_file):
    def blackhole():
        global generation
        generation += 1

    async def handle(client_reader, client_writer):
        with open(upstream_file) as f:
            port = int(f.read().strip())
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            client_writer.close()
            return
        mine = generation
        asyncio.ensure_future(pump(client_reader, up_writer, mine))
        asyncio.ensure_future(pump(up_reader, client_writer, mine))

    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, blackhole)
    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
