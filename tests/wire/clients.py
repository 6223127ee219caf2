"""MCP on the stand-in's erlmcp wires, by clients andon did not write: the `websockets`
library for WebSocket, Python's socket module for TCP. Exits non-zero on the first
assertion that fails; prints what it checked.

usage: clients.py HTTP_ADDR TCP_ADDR [hostile]
(hostile: silence, unfinished messages, batches and duplicate ids; the stand-in must run
with --idle-timeout 2s)
"""
import asyncio
import json
import socket
import sys
import urllib.request

import websockets

HTTP, TCP = sys.argv[1], sys.argv[2]
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-03-26", "capabilities": {},
                   "clientInfo": {"name": "python-websockets", "version": websockets.__version__}}}


def line(m):
    return json.dumps(m) + "\n"


def metric(name, labels):
    text = urllib.request.urlopen(f"http://{HTTP}/metrics", timeout=5).read().decode()
    for l in text.splitlines():
        if l.startswith(name + "{" + labels + "}"):
            return float(l.split()[-1])
    raise AssertionError(f"{name}{{{labels}}} not in /metrics")


def admission(body):
    req = urllib.request.Request(f"http://{HTTP}/admin/admission", data=json.dumps(body).encode(),
                                 method="POST")
    urllib.request.urlopen(req, timeout=5).read()


async def closed_with(ws):
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 5)
    except websockets.ConnectionClosed as e:
        return e.rcvd.code if e.rcvd else None


async def websocket():
    url = f"ws://{HTTP}/mcp/ws"
    async with websockets.connect(url) as ws:
        async def rpc(m):
            await ws.send(line(m))
            raw = await asyncio.wait_for(ws.recv(), 5)
            assert isinstance(raw, str) and raw.endswith("\n"), f"a text frame ending in \\n: {raw!r}"
            return json.loads(raw)

        r = await rpc(INIT)
        assert r["id"] == 1 and r["result"]["serverInfo"]["name"] == "andon-stand-in", r
        await ws.send(line({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        r = await rpc({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        assert "echo" in [t["name"] for t in r["result"]["tools"]], r
        r = await rpc({"jsonrpc": "2.0", "id": 3, "method": "ping"})
        assert r == {"jsonrpc": "2.0", "id": 3, "result": {}}, r
        r = await rpc({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
                       "params": {"name": "echo", "arguments": {"text": "over ws"}}})
        assert r["result"]["content"][0]["text"] == "over ws", r
        print("ws: initialize, tools/list, ping, tools/call answered")
        assert metric("erlmcp_connections_total", 'transport="ws"') == 1
        print("ws: erlmcp_connections_total{transport=\"ws\"} 1 while open")
        # Two messages in one frame, and one split over two frames (erlmcp buffers a
        # last piece without its \n until the next frame).
        await ws.send(line({"jsonrpc": "2.0", "id": 5, "method": "ping"}) +
                      line({"jsonrpc": "2.0", "id": 6, "method": "ping"}) + '{"jsonrpc": "2.0", ')
        await ws.send('"id": 7, "method": "ping"}\n')
        ids = sorted([json.loads(await asyncio.wait_for(ws.recv(), 5))["id"] for _ in range(3)])
        assert ids == [5, 6, 7], ids
        print("ws: two messages in a frame and one over two frames, all answered")
        await ws.send(b"\x00binary")
        code = await closed_with(ws)
        assert code == 1003, f"a binary frame closes with 1003, got {code}"
        print("ws: a binary frame closes with 1003")
    async with websockets.connect(url) as ws:
        await ws.send("this is not json\n")
        code = await closed_with(ws)
        assert code == 1002, f"unparsable JSON closes with 1002, got {code}"
        print("ws: unparsable JSON closes with 1002")
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send("x" * (2 << 20) + "\n")
        code = await closed_with(ws)
        assert code == 1009, f"a message past 1 MiB closes with 1009, got {code}"
        print("ws: a 2 MiB frame closes with 1009")
    # A ping before initialize is answered (the spec allows it); a session that opens
    # with a notification has nobody serving it (rmcp ends it): closed, not left silent.
    async with websockets.connect(url) as ws:
        await ws.send(line({"jsonrpc": "2.0", "id": 5, "method": "ping"}))
        r = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert r == {"jsonrpc": "2.0", "id": 5, "result": {}}, r
        await ws.send(line({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        code = await closed_with(ws)
        assert code == 1002, f"a notification before initialize: close 1002, got {code}"
        print("ws: ping before initialize answered; a notification before it closes with 1002")
    ws = await websockets.connect(url)
    await ws.close()
    assert ws.close_code == 1000, f"our close echoed, got {ws.close_code} (1006: none)"
    print("ws: the client's close is echoed")


def tcp():
    host, port = TCP.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=5)
    f = s.makefile("rwb")

    def rpc(m):
        f.write(line(m).encode() if isinstance(m, dict) else m)
        f.flush()
        return json.loads(f.readline())

    r = rpc(INIT)
    assert r["result"]["serverInfo"]["name"] == "andon-stand-in", r
    f.write(line({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode())
    r = rpc({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
             "params": {"name": "echo", "arguments": {"text": "over tcp"}}})
    assert r["result"]["content"][0]["text"] == "over tcp", r
    assert metric("erlmcp_connections_total", 'transport="tcp"') == 1
    r = rpc(b"garbage\n")
    assert r["error"]["code"] == -32700, r
    r = rpc({"jsonrpc": "2.0", "id": 3, "method": "ping"})
    assert r["id"] == 3 and "result" in r, r
    r = rpc(b'{"jsonrpc": "2.0", "id": 9, "method": "\xff\xfe"}\n')
    assert r["error"]["code"] == -32700, r
    r = rpc({"jsonrpc": "2.0", "id": 4, "method": "ping"})
    assert r["id"] == 4 and "result" in r, r
    print("tcp: initialize, tools/call answered; garbage and bad UTF-8 get -32700 and the connection stays")
    s.close()
    # A half-close (as `nc -N` does) still gets its answers.
    s = socket.create_connection((host, int(port)), timeout=5)
    s.sendall((line(INIT) + line({"jsonrpc": "2.0", "method": "notifications/initialized"}) +
               line({"jsonrpc": "2.0", "id": 2, "method": "ping"})).encode())
    s.shutdown(socket.SHUT_WR)
    got = s.makefile("rb").read().decode().splitlines()
    assert sorted(json.loads(l)["id"] for l in got) == [1, 2], got
    print("tcp: after a half-close, both answers arrive")
    s.close()
    # The same while shedding: the refusals, queued at once, are written too.
    admission({"admit": 0.01})
    try:
        s = socket.create_connection((host, int(port)), timeout=5)
        pings = "".join(line({"jsonrpc": "2.0", "id": 10 + k, "method": "ping"}) for k in range(20))
        s.sendall((line(INIT) + line({"jsonrpc": "2.0", "method": "notifications/initialized"}) +
                   pings).encode())
        s.shutdown(socket.SHUT_WR)
        got = [json.loads(l) for l in s.makefile("rb").read().decode().splitlines()]
        assert sorted(m["id"] for m in got) == [1] + list(range(10, 30)), got
        assert any(m.get("error", {}).get("code") == -32029 for m in got), got
        print("tcp: after a half-close while shedding, every answer and refusal arrives")
        s.close()
    finally:
        admission({"admit": None})


async def cap():
    admission({"admit": None, "max_sessions": 1})
    try:
        async with websockets.connect(f"ws://{HTTP}/mcp/ws") as first:
            await first.send(line(INIT))
            await asyncio.wait_for(first.recv(), 5)
            async with websockets.connect(f"ws://{HTTP}/mcp/ws") as second:
                code = await closed_with(second)
                assert code == 1013, f"past the session cap: close 1013, got {code}"
            host, port = TCP.rsplit(":", 1)
            s = socket.create_connection((host, int(port)), timeout=5)
            r = json.loads(s.makefile("rb").readline())
            assert r["error"]["code"] == -32029, r
            print("cap: a second session gets close 1013 (ws) or a -32029 refusal (tcp)")
    finally:
        admission({"admit": None})


async def hostile():
    """Run against a stand-in with --idle-timeout 2s."""
    url = f"ws://{HTTP}/mcp/ws"
    async with websockets.connect(url) as ws:
        async def recv():
            return json.loads(await asyncio.wait_for(ws.recv(), 5))

        await ws.send(line(INIT))
        await recv()
        await ws.send(line({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        await ws.send(json.dumps([{"jsonrpc": "2.0", "id": 5, "method": "ping"}]) + "\n")
        r = await recv()
        assert r["error"]["code"] == -32600 and r["id"] is None, r
        call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"text": "a"}}}
        await ws.send(line(call) + line(call))
        got = [await recv(), await recv()]
        assert all(m["id"] == 7 for m in got), got
        refused = [m for m in got if "error" in m]
        assert len(refused) == 1 and refused[0]["error"]["code"] == -32600 and \
            "already in flight" in refused[0]["error"]["message"], got
        # rmcp reads 7.0 as 7: the same id, still refused while 7 is in flight, and
        # answered once it is not.
        await ws.send(line(call) + line({**call, "id": 7.0}))
        got = [await recv(), await recv()]
        assert sum("error" in m for m in got) == 1, got
        await ws.send(line({"jsonrpc": "2.0", "id": 7.0, "method": "ping"}))
        r = await recv()
        assert "result" in r, f"7.0 answered once 7 is done: {r}"
        big = 123456789012345678901234567890
        await ws.send(f'{{"jsonrpc": "2.0", "id": {big}, "method": "ping"}}\n')
        r = await recv()
        assert r["id"] == big, f"the id echoed as sent: {r}"
        await ws.send(line({"jsonrpc": "2.0", "id": 8, "method": "ping"}))
        r = await recv()
        assert r["id"] == 8 and "result" in r, r
        print("ws: a batch gets -32600, a second request under an id in flight gets -32600, "
              "an id past 64 bits is echoed as sent, and the connection stays")
    async with websockets.connect(url, ping_interval=None) as ws:
        code = await closed_with(ws)
        assert code == 1000, f"silent past the idle timeout: close 1000, got {code}"
    async with websockets.connect(url, ping_interval=None) as ws:
        await ws.send('{"jsonrpc": "2.0", "id": 1,')
        code = await closed_with(ws)
        assert code == 1002, f"a message left unfinished: close 1002, got {code}"
    print("ws: a silent connection is closed with 1000, an unfinished message with 1002")
    host, port = TCP.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    f = s.makefile("rwb")
    f.write(line(INIT).encode())
    f.flush()
    assert json.loads(f.readline())["id"] == 1
    s.sendall(b'{"jsonrpc": "2.0", "id": 1,')
    assert f.read() == b"", "tcp: a connection that completes no line is closed"
    s.close()
    # A batch on TCP: -32600, and the connection stays.
    s = socket.create_connection((host, int(port)), timeout=10)
    f = s.makefile("rwb")
    f.write((json.dumps([{"jsonrpc": "2.0", "id": 5, "method": "ping"}]) + "\n").encode())
    f.flush()
    r = json.loads(f.readline())
    assert r["error"]["code"] == -32600 and r["id"] is None, r
    s.close()
    print("tcp: a connection that completes no line is closed by the idle timeout")


if sys.argv[3:] == ["hostile"]:
    asyncio.run(hostile())
    print("all checks passed")
    sys.exit(0)
asyncio.run(websocket())
tcp()
asyncio.run(cap())
print("all checks passed")
