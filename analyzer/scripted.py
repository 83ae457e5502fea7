"""A small scripted MSNP service and client: the `demo` command's world and the tests' fake server.

`ScriptedService` listens on loopback with the three server roles of a login:
a dispatch server (DS: `VER`, `CVR`, then `XFR ... NS` to the NS), a
notification server (NS: TWN or SSO login, contact list, presence, a `CHL`
challenge, `PNG`, `XFR ... SB` and an `RNG` invitation from the second user)
and a switchboard (SB: `USR`/`CAL`/`JOI` or `ANS`/`IRO`, `MSG` with `ACK`, `BYE`).
It speaks the MSNP8 and the MSNP15+ dialects (whichever the client offers; SSO,
`ADL`, `UBX`, the MSNP13+ trailing fields of `XFR SB` and `RNG`). The second
user, bob@example.com, answers every text message.

`ScriptedClient` is alice@example.com: it logs in through the DS, follows the
`XFR NS`, opens a switchboard with `XFR SB`, accepts bob's `RNG`, chats on both,
and logs out, following whatever addresses the servers (or a proxy) hand it.

`EchoServer` writes back every byte it receives (load tests and benchmarks).

Every endpoint records what it sent and received per connection, so a test can
check that a proxy in between changed nothing but the addresses it rewrote.
Everything is bounded: each read waits at most `timeout` seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from dataclasses import dataclass, field

from analyzer.msnp import C2S, S2C, Command, CommandReader, encode_command

BOB = "bob@example.com"
ALICE = "alice@example.com"
SUPPORTED = range(8, 19)
# A profile message from the NS whose body quotes an XFR line: a proxy must not rewrite it.
PROFILE = (b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgsprofile; charset=UTF-8\r\n"
           b"LoginTime: 1700000000\r\nX-Note: XFR 1 SB 1.2.3.4:1863 CKI x\r\n\r\n")


class ScriptError(Exception):
    """The other side did not say what the script expected (or said nothing in time)."""


def text_message(body: str, sender: str | None = None) -> bytes:
    return (b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n"
            b"X-MMS-IM-Format: FN=Arial; EF=; CO=0; CS=0; PF=22\r\n\r\n" + body.encode())


TYPING = b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgscontrol\r\nTypingUser: " 


@dataclass
class Endpoint:
    """One TCP connection as one side saw it."""
    role: str
    local: tuple
    peer: tuple
    sent: bytearray = field(default_factory=bytearray)
    received: bytearray = field(default_factory=bytearray)


class Peer:
    """An asyncio stream pair that frames incoming commands with the shared codec."""

    def __init__(self, reader, writer, direction_in: str, endpoint: Endpoint, timeout: float,
                 pace: float = 0.0) -> None:
        self.reader, self.writer = reader, writer
        self.pace = pace
        self.codec = CommandReader(direction_in)
        self.endpoint = endpoint
        self.timeout = timeout
        self.queue: list[Command] = []

    async def send(self, data: bytes) -> None:
        if self.pace:
            await asyncio.sleep(self.pace)  # the demo's pace, so a person can follow it
        self.endpoint.sent += data
        self.writer.write(data)
        await self.writer.drain()

    async def next(self) -> Command | None:
        """The next command, or None at the end of the stream."""
        while not self.queue:
            try:
                data = await asyncio.wait_for(self.reader.read(65536), self.timeout)
            except asyncio.TimeoutError:
                raise ScriptError(f"{self.endpoint.role}: nothing received for {self.timeout:g} s") from None
            except (ConnectionError, OSError):
                data = b""
            if not data:
                self.queue += [e for e in self.codec.close() if type(e) is Command]
                if not self.queue:
                    return None
                break
            self.endpoint.received += data
            self.queue += [e for e in self.codec.feed(data) if type(e) is Command]
        return self.queue.pop(0)

    async def expect(self, *codes: str) -> Command:
        cmd = await self.next()
        if cmd is None:
            raise ScriptError(f"{self.endpoint.role}: connection closed, expected {'/'.join(codes)}")
        if cmd.cmd not in codes:
            raise ScriptError(f"{self.endpoint.role}: expected {'/'.join(codes)}, got {cmd.line[:60]!r}")
        return cmd

    async def close(self) -> None:
        try:
            self.writer.close()
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


def _addr(sock_name) -> str:
    return f"{sock_name[0]}:{sock_name[1]}"


class ScriptedService:
    """DS, NS and SB on loopback (ephemeral ports); `start()` then `stop()`."""

    def __init__(self, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
        self.host = host
        self.timeout = timeout
        self.endpoints: list[Endpoint] = []
        self.errors: list[str] = []
        self._servers: dict[str, asyncio.base_events.Server] = {}
        self._addresses: dict[str, tuple[str, int]] = {}
        self._cookies: dict[str, str] = {}
        self._ids = itertools.count(11752013)
        self._tasks: set[asyncio.Task] = set()

    def address(self, role: str) -> tuple[str, int]:
        """Where the role listens (still known after `stop()`)."""
        return self._addresses[role]

    async def start(self) -> "ScriptedService":
        for role, handler in (("DS", self._ds), ("NS", self._ns), ("SB", self._sb)):
            self._servers[role] = await asyncio.start_server(
                lambda r, w, role=role, handler=handler: self._serve(role, handler, r, w), self.host, 0)
            self._addresses[role] = self._servers[role].sockets[0].getsockname()[:2]
        return self

    async def stop(self) -> None:
        for server in self._servers.values():
            server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self._servers.values():
            await server.wait_closed()

    async def _serve(self, role, handler, reader, writer) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        sock = writer.get_extra_info("socket")
        endpoint = Endpoint(role, sock.getsockname()[:2], writer.get_extra_info("peername")[:2])
        self.endpoints.append(endpoint)
        peer = Peer(reader, writer, C2S, endpoint, self.timeout)
        try:
            await handler(peer)
        except ScriptError as exc:
            self.errors.append(str(exc))
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            await peer.close()

    # -- shared steps -------------------------------------------------------

    @staticmethod
    async def _ver(peer: Peer) -> int | None:
        cmd = await peer.expect("VER")
        offered = [int(p[4:]) for p in cmd.params if p.startswith("MSNP") and p[4:].isdigit()]
        usable = [v for v in offered if v in SUPPORTED]
        if not usable:
            await peer.send(encode_command("VER", cmd.trid, ["0"]))
            return None
        version = max(usable)
        await peer.send(encode_command("VER", cmd.trid, [f"MSNP{version}", "CVR0"]))
        cvr = await peer.expect("CVR")
        await peer.send(encode_command("CVR", cvr.trid, ["8.5.1302", "8.5.1302", "7.0.0816",
                                                         "http://download.example.com/msn.exe",
                                                         "http://messenger.example.com"]))
        return version

    # -- DS -----------------------------------------------------------------

    async def _ds(self, peer: Peer) -> None:
        version = await self._ver(peer)
        if version is None:
            return
        usr = await peer.expect("USR")
        ns = _addr(self.address("NS"))
        tail = ["U", "D"] if version >= 13 else ["0", _addr(self.address("DS"))]
        await peer.send(encode_command("XFR", usr.trid, ["NS", ns] + tail))
        await peer.next()  # the client leaves

    # -- NS -----------------------------------------------------------------

    async def _ns(self, peer: Peer) -> None:
        version = await self._ver(peer)
        if version is None:
            return
        sso = version >= 15
        usr = await peer.expect("USR")
        handle = usr.params[2] if len(usr.params) > 2 else ALICE
        if sso:
            await peer.send(encode_command("USR", usr.trid, ["SSO", "S", "MBI_KEY_OLD", "Tm9uY2U="]))
        else:
            await peer.send(encode_command("USR", usr.trid, ["TWN", "S", "lc=1033,id=507,tw=40,ru=http://x"]))
        usr = await peer.expect("USR")
        if sso:
            await peer.send(encode_command("USR", usr.trid, ["OK", handle, "1", "0"]))
        else:
            await peer.send(encode_command("USR", usr.trid, ["OK", handle, "Alice", "1", "0"]))
        await peer.send(encode_command("MSG", None, ["Hotmail", "Hotmail"], PROFILE))
        while True:
            cmd = await peer.next()
            if cmd is None or cmd.cmd == "OUT":
                return
            await self._ns_command(peer, cmd, version, handle)

    async def _ns_command(self, peer: Peer, cmd: Command, version: int, handle: str) -> None:
        t = cmd.trid
        code = cmd.cmd
        if code == "SYN":
            await peer.send(encode_command("SYN", t, ["1", "1", "1"]) + encode_command("GTC", None, ["A"])
                            + encode_command("BLP", None, ["AL"])
                            + encode_command("LSG", None, ["0", "Other%20Contacts", "0"])
                            + encode_command("LST", None, [BOB, "Bob", "11", "0"]))
        elif code == "BLP":
            await peer.send(encode_command("BLP", t, cmd.params))
        elif code == "ADL":
            await peer.send(encode_command("ADL", t, ["OK"]))
        elif code == "PRP":
            await peer.send(encode_command("PRP", t, cmd.params))
        elif code == "UUX":
            await peer.send(encode_command("UUX", t, ["0"]))
        elif code == "CHG":
            await peer.send(encode_command("CHG", t, cmd.params))
            if version >= 13:
                await peer.send(encode_command("ILN", t, ["NLN", BOB, "1", "Bob", "0"])
                                + encode_command("UBX", None, [BOB, "1"],
                                                 b"<Data><PSM>XFR 1 NS 10.0.0.1:1863 0 x</PSM></Data>"))
            else:
                await peer.send(encode_command("ILN", t, ["NLN", BOB, "Bob"]))
            await peer.send(encode_command("CHL", 0, ["29409134351025259292"]))
        elif code == "QRY":
            await peer.send(encode_command("QRY", t, []))
        elif code == "PNG":
            await peer.send(encode_command("QNG", None, ["50"] if version >= 9 else []))
        elif code == "XFR" and cmd.params[:1] == ["SB"]:
            sb = _addr(self.address("SB"))
            cookie = f"{next(self._ids)}.{abs(hash(handle)) % 10**10}.{t}"
            self._cookies[cookie] = handle
            tail = ["U", "messenger.msn.com", "1"] if version >= 14 else (
                ["U", "messenger.msn.com"] if version >= 13 else [])
            await peer.send(encode_command("XFR", t, ["SB", sb, "CKI", cookie] + tail))
            # bob invites alice to a second conversation
            invite = f"{next(self._ids)}.{abs(hash(BOB)) % 10**10}"
            self._cookies[invite] = handle
            session = str(next(self._ids))
            await peer.send(encode_command("RNG", None, [session, sb, "CKI", invite, BOB, "Bob"] + (
                ["U", "messenger.msn.com", "1"] if version >= 13 else [])))
        else:
            await peer.send(f"200 {t if t is not None else 0}\r\n".encode())

    # -- SB -----------------------------------------------------------------

    async def _sb(self, peer: Peer) -> None:
        first = await peer.expect("USR", "ANS")
        params = first.params
        if len(params) < 2 or params[1] not in self._cookies:
            await peer.send(f"911 {first.trid}\r\n".encode())
            return
        handle = params[0]
        if first.cmd == "USR":
            await peer.send(encode_command("USR", first.trid, ["OK", handle, "Alice"]))
        else:
            await peer.send(encode_command("IRO", first.trid, ["1", "1", BOB, "Bob"])
                            + encode_command("ANS", first.trid, ["OK"]))
            await peer.send(encode_command("MSG", None, [BOB, "Bob"], text_message("Hello Alice, got a minute?")))
        while True:
            cmd = await peer.next()
            if cmd is None or cmd.cmd == "OUT":
                return
            if cmd.cmd == "CAL":
                await peer.send(encode_command("CAL", cmd.trid, ["RINGING", str(next(self._ids))]))
                await peer.send(encode_command("JOI", None, [BOB, "Bob"]))
            elif cmd.cmd == "MSG":
                if cmd.params[:1] == ["A"] or cmd.params[:1] == ["D"]:
                    await peer.send(encode_command("ACK", cmd.trid, []))
                if cmd.payload and b"text/plain" in cmd.payload:
                    said = cmd.payload.split(b"\r\n\r\n", 1)[-1].decode("utf-8", "replace")
                    await peer.send(encode_command("MSG", None, [BOB, "Bob"], TYPING + BOB.encode() + b"\r\n\r\n"))
                    await peer.send(encode_command("MSG", None, [BOB, "Bob"],
                                                   text_message(f"Bob here. You said: {said}")))
            else:
                await peer.send(f"200 {cmd.trid if cmd.trid is not None else 0}\r\n".encode())


class ScriptedClient:
    """alice@example.com: DS -> NS -> SB (XFR SB) and SB (RNG), chat, log out."""

    def __init__(self, host: str, port: int, version: int = 8, timeout: float = 10.0,
                 handle: str = ALICE, pace: float = 0.0) -> None:
        self.target = (host, port)
        self.pace = pace
        self.version = version
        self.timeout = timeout
        self.handle = handle
        self.endpoints: list[Endpoint] = []
        self.said: list[str] = []  # bob's text messages as received
        self._trid = itertools.count(1)

    async def _connect(self, role: str, host: str, port: int) -> Peer:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), self.timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise ScriptError(f"{role}: cannot connect to {host}:{port}: {exc}") from None
        endpoint = Endpoint(role, writer.get_extra_info("sockname")[:2], (host, port))
        self.endpoints.append(endpoint)
        return Peer(reader, writer, S2C, endpoint, self.timeout, self.pace)

    def _cmd(self, code: str, *params, payload: bytes | None = None) -> bytes:
        return encode_command(code, next(self._trid), list(params), payload)

    async def _login_versions(self, peer: Peer) -> None:
        offered = [f"MSNP{self.version}"] + (["MSNP14", "MSNP13"] if self.version >= 15 else []) + ["CVR0"]
        await peer.send(self._cmd("VER", *offered))
        ver = await peer.expect("VER")
        if ver.params[:1] == ["0"]:
            raise ScriptError("the server supports none of the offered versions")
        await peer.send(self._cmd("CVR", "0x0409", "winnt", "5.1", "i386", "MSNMSGR", "8.5.1302",
                                  "msmsgs", self.handle))
        await peer.expect("CVR")

    async def run(self) -> None:
        sso = self.version >= 15
        method = "SSO" if sso else "TWN"
        ds = await self._connect("DS", *self.target)
        await self._login_versions(ds)
        await ds.send(self._cmd("USR", method, "I", self.handle))
        xfr = await ds.expect("XFR")
        await ds.close()
        ns = await self._connect("NS", *_split(xfr.params[1]))
        await self._login_versions(ns)
        await ns.send(self._cmd("USR", method, "I", self.handle))
        await ns.expect("USR")
        await ns.send(self._cmd("USR", method, "S", "t=ticket&p=profile", *(["proof"] if sso else [])))
        await ns.expect("USR")
        await ns.expect("MSG")
        if sso:
            await ns.send(self._cmd("BLP", "AL"))
            await ns.expect("BLP")
            await ns.send(self._cmd("ADL", payload=b'<ml l="1"><d n="example.com"><c n="bob" l="3" t="1"/></d></ml>'))
            await ns.expect("ADL")
            await ns.send(self._cmd("PRP", "MFN", "Alice"))
            await ns.expect("PRP")
        else:
            await ns.send(self._cmd("SYN", "0"))
            await ns.expect("SYN")
            for code in ("GTC", "BLP", "LSG", "LST"):
                await ns.expect(code)
        await ns.send(self._cmd("CHG", "NLN", "0"))
        await ns.expect("CHG")
        await ns.expect("ILN")
        if sso:
            await ns.expect("UBX")
        chl = await ns.expect("CHL")
        answer = hashlib.md5((chl.params[0] + "Q1P7W2E4J9R8U3S5").encode()).hexdigest().encode()
        await ns.send(self._cmd("QRY", "msmsgs@msnmsgr.com", payload=answer))
        await ns.expect("QRY")
        await ns.send(b"PNG\r\n")
        await ns.expect("QNG")
        await ns.send(self._cmd("XFR", "SB"))
        xfr = await ns.expect("XFR")
        rng = await ns.expect("RNG")
        # The switchboard we asked for: call bob and chat.
        sb = await self._connect("SB", *_split(xfr.params[1]))
        await sb.send(self._cmd("USR", self.handle, xfr.params[3]))
        await sb.expect("USR")
        await sb.send(self._cmd("CAL", BOB))
        await sb.expect("CAL")
        await sb.expect("JOI")
        await self._chat(sb, "Hi Bob! XFR 1 SB 1.2.3.4:1863 CKI x is just text.")
        await sb.send(b"OUT\r\n")
        await sb.next()
        await sb.close()
        # bob's invitation: answer it.
        sb2 = await self._connect("SB", *_split(rng.params[1]))
        await sb2.send(self._cmd("ANS", self.handle, rng.params[3], rng.params[0]))
        await sb2.expect("IRO")
        await sb2.expect("ANS")
        greeting = await sb2.expect("MSG")
        self.said.append(greeting.payload.split(b"\r\n\r\n", 1)[-1].decode())
        await self._chat(sb2, "Sure, what's up?")
        await sb2.send(b"OUT\r\n")
        await sb2.next()
        await sb2.close()
        await ns.send(b"OUT\r\n")
        await ns.next()
        await ns.close()

    async def _chat(self, sb: Peer, text: str) -> None:
        await sb.send(self._cmd("MSG", "U", payload=TYPING + self.handle.encode() + b"\r\n\r\n"))
        await sb.send(self._cmd("MSG", "A", payload=text_message(text)))
        await sb.expect("ACK")
        await sb.expect("MSG")  # typing
        reply = await sb.expect("MSG")
        self.said.append(reply.payload.split(b"\r\n\r\n", 1)[-1].decode())


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class EchoServer:
    """Writes back every byte; keeps a digest of each connection's bytes in and out."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.server = None
        self.digests: list[tuple[str, str]] = []  # (received, sent) per finished connection
        self.peers: list[tuple] = []
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> "EchoServer":
        self.server = await asyncio.start_server(self._serve, self.host, 0)
        return self

    @property
    def address(self) -> tuple[str, int]:
        return self.server.sockets[0].getsockname()[:2]

    async def _serve(self, reader, writer) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        self.peers.append(writer.get_extra_info("peername")[:2])
        got, sent = hashlib.sha256(), hashlib.sha256()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                got.update(data)
                writer.write(data)
                sent.update(data)
                await writer.drain()
            writer.write_eof()
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            self.digests.append((got.hexdigest(), sent.hexdigest()))
            self._tasks.discard(task)
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError, asyncio.CancelledError):
                pass

    async def stop(self) -> None:
        self.server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.server.wait_closed()
