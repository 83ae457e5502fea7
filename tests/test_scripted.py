"""The scripted MSNP service and client on their own (no proxy): both dialects, and wrong input."""

from __future__ import annotations

import asyncio

import pytest

from analyzer.msnp import C2S, Command, CommandReader
from analyzer.scripted import EchoServer, ScriptedClient, ScriptedService, ScriptError


@pytest.mark.parametrize("version", [8, 15])
def test_scripted_login_and_chats_directly(version):
    async def go():
        service = await ScriptedService().start()
        client = ScriptedClient(*service.address("DS"), version=version, timeout=5)
        await asyncio.wait_for(client.run(), 20)
        await service.stop()
        return service, client
    service, client = asyncio.run(go())
    assert service.errors == []
    assert [e.role for e in service.endpoints] == ["DS", "NS", "SB", "SB"]
    assert client.said[1] == "Hello Alice, got a minute?"
    ns_in = [e.cmd for e in CommandReader(C2S).feed(bytes(service.endpoints[1].received)) if type(e) is Command]
    if version >= 15:
        assert b"USR 6 SSO I alice@example.com" in service.endpoints[1].received and "ADL" in ns_in
        assert b" U messenger.msn.com 1\r\n" in service.endpoints[1].sent  # MSNP14+ XFR SB / RNG tail
    else:
        assert b"TWN" in service.endpoints[1].received and "SYN" in ns_in
        assert b"U messenger.msn.com" not in service.endpoints[1].sent


def test_bad_cookie_and_unsupported_version_are_refused():
    async def go():
        service = await ScriptedService().start()
        r, w = await asyncio.open_connection(*service.address("SB"))
        w.write(b"USR 1 alice@example.com not-a-cookie\r\n")
        refused = await asyncio.wait_for(r.read(), 5)
        w.close()
        r, w = await asyncio.open_connection(*service.address("DS"))
        w.write(b"VER 1 MSNP2 CVR0\r\n")
        ver = await asyncio.wait_for(r.read(), 5)
        w.close()
        client = ScriptedClient(*service.address("SB"), timeout=2)
        with pytest.raises(ScriptError):
            await client.run()  # the SB does not speak VER: the script notices
        await service.stop()
        return refused, ver
    refused, ver = asyncio.run(go())
    assert refused == b"911 1\r\n" and ver == b"VER 1 0\r\n"


def test_echo_server_digests():
    async def go():
        echo = await EchoServer().start()
        r, w = await asyncio.open_connection(*echo.address)
        w.write(b"abc" * 1000)
        w.write_eof()
        back = await asyncio.wait_for(r.read(), 5)
        w.close()
        await echo.stop()
        return back, echo
    back, echo = asyncio.run(go())
    assert back == b"abc" * 1000 and echo.digests[0][0] == echo.digests[0][1]
