"""A real SIP peer for tests: Debian's sipp places or answers calls; a UDP socket hears the RTP it gets."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np

from tests.servers import free_port, free_ports

SHIPPED_PCAPS = Path("/usr/share/sip-tester")
LOOPBACK = "127.0.0.1"
# sipp's -mp port and the three after it: audio RTP and RTCP, video RTP and RTCP.
SIPP_MEDIA_PORTS = 4
# Payload types of G.711 in the static RTP profile.
PCMU, PCMA = 0, 8


def _alaw_table() -> np.ndarray:
    values = []
    for code in range(256):
        a = code ^ 0x55
        magnitude = (a & 0x0F) << 4
        segment = (a & 0x70) >> 4
        if segment == 0:
            magnitude += 8
        else:
            magnitude = (magnitude + 0x108) << (segment - 1)
        values.append(magnitude if a & 0x80 else -magnitude)
    return np.array(values, dtype=np.int16)


def _ulaw_table() -> np.ndarray:
    values = []
    for code in range(256):
        u = ~code & 0xFF
        magnitude = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
        values.append(0x84 - magnitude if u & 0x80 else magnitude - 0x84)
    return np.array(values, dtype=np.int16)


DECODE = {PCMA: _alaw_table(), PCMU: _ulaw_table()}


@dataclass
class RtpPacket:
    """One RTP packet as it arrived: when, its payload type and its samples (G.711 decoded)."""

    at: float
    payload_type: int
    samples: np.ndarray


@dataclass
class RtpSink(asyncio.DatagramProtocol):
    """A UDP port that records every RTP packet sent to it; the SDP of a test call points here."""

    port: int = field(default_factory=lambda: free_port())
    packets: list[RtpPacket] = field(default_factory=list)
    clock: Callable[[], float] = time.monotonic
    """What stamps each packet's arrival; the phone benchmark compares it with sipp's wall clock."""
    _transport: asyncio.DatagramTransport | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(LOOPBACK, self.port))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if len(data) < 12 or data[0] >> 6 != 2:
            return
        payload_type = data[1] & 0x7F
        header = 12 + 4 * (data[0] & 0x0F)
        table = DECODE.get(payload_type)
        samples = table[np.frombuffer(data[header:], dtype=np.uint8)] if table is not None else np.zeros(0)
        self.packets.append(RtpPacket(self.clock(), payload_type, samples))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def audio(self) -> np.ndarray:
        """Every G.711 sample received, in order."""
        chunks = [p.samples for p in self.packets if p.payload_type in DECODE]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    def loud_seconds(self, threshold: float = 500.0) -> float:
        """Seconds of received audio whose 20 ms RMS is above `threshold` (speech, not silence)."""
        audio = self.audio().astype(np.float64)
        frames = audio[: len(audio) // 160 * 160].reshape(-1, 160)
        return float((np.sqrt((frames**2).mean(axis=1)) > threshold).sum() * 0.02) if len(frames) else 0.0


@dataclass
class SippRun:
    """A finished sipp: its exit code (0: every call succeeded) and what it printed and logged."""

    returncode: int
    output: str
    errors: str


def uac_pcap_scenario(folder: Path, rtp_port: int, *, after_dtmf_ms: int = 6000) -> Path:
    """sipp's own uac_pcap scenario, with its SDP pointing media at `rtp_port` and the shipped pcaps
    copied beside it; it plays speech, presses 1, waits `after_dtmf_ms`, then hangs up."""
    dumped = _dump_scenario("uac_pcap")
    scenario = re.sub(r"m=audio \[auto_media_port\]", f"m=audio {rtp_port}", dumped)
    pause_after_dtmf = r'(dtmf_2833_1.pcap"/>\s*</action>\s*</nop>\s*<pause milliseconds=")\d+'
    scenario = re.sub(pause_after_dtmf, rf"\g<1>{after_dtmf_ms}", scenario)
    assert f"m=audio {rtp_port}" in scenario, "sipp's uac_pcap no longer offers [auto_media_port]"
    assert f'milliseconds="{after_dtmf_ms}"' in scenario, "sipp's uac_pcap no longer pauses after its DTMF"
    return _with_pcaps(folder, "uac_pcap.xml", scenario)


def hang_up_scenario(folder: Path, rtp_port: int, digit_pcap: str, *, wait_ms: int = 4500) -> Path:
    """A caller that listens `wait_ms` (the greeting), presses a key, then waits for the far end's BYE."""
    scenario = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="caller waits to be hung up on">
  <send retrans="500"><![CDATA[
      {_INVITE}
      m=audio {rtp_port} RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rrs="true"/>
  <send><![CDATA[
      {_ACK}
  ]]></send>
  <pause milliseconds="{wait_ms}"/>
  <nop><action><exec play_pcap_audio="pcap/{digit_pcap}"/></action></nop>
  <recv request="BYE" timeout="30000"/>
  <send><![CDATA[
      {_OK_NO_BODY}
  ]]></send>
</scenario>
"""
    return _with_pcaps(folder, "hang_up.xml", scenario)


def listen_scenario(
    folder: Path, rtp_port: int, *, listen_ms: int = 4000, sends_silence: bool = True
) -> Path:
    """A caller that says nothing, listens `listen_ms` after the answer, then hangs up with BYE.

    Like a real phone it streams RTP from the answer on (A-law silence), unless `sends_silence` is False.
    With `-trace_logs` sipp writes two lines to its log file: `invite_sent <s> <us>` and `answered <s> <us>`,
    its wall clock when it sent the INVITE and when the 200 OK arrived.
    """
    # One second of A-law silence (0xD5), which sipp's rtp_stream sends in 20 ms packets, looped.
    (folder / "silence.alaw").write_bytes(b"\xd5" * 8000)
    silence = (
        f'<nop><action><exec rtp_stream="silence.alaw,-1,{PCMA}"/></action></nop>' if sends_silence else ""
    )
    scenario = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="caller that listens">
  <nop><action>
    <gettimeofday assign_to="invite_s,invite_us"/>
    <log message="invite_sent [$invite_s] [$invite_us]"/>
  </action></nop>
  <send retrans="500"><![CDATA[
      {_INVITE}
      m=audio {rtp_port} RTP/AVP 8 0 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rrs="true">
    <action>
      <gettimeofday assign_to="answered_s,answered_us"/>
      <log message="answered [$answered_s] [$answered_us]"/>
    </action>
  </recv>
  <send><![CDATA[
      {_ACK}
  ]]></send>
  {silence}
  <pause milliseconds="{listen_ms}"/>
  <send retrans="500"><![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0
  ]]></send>
  <recv response="200" crlf="true"/>
</scenario>
"""
    return _with_pcaps(folder, "listen.xml", scenario)


def callee_scenario(folder: Path, rtp_port: int, *, busy: bool = False) -> Path:
    """A phone that answers (or answers busy) and, once answered, stays on until it gets a BYE."""
    if busy:
        body = """
  <recv request="INVITE"/>
  <send><![CDATA[
      SIP/2.0 486 Busy Here
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
  ]]></send>
  <recv request="ACK"/>"""
    else:
        body = f"""
  <recv request="INVITE"/>
  <send><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=callee 1 1 IN IP4 [local_ip]
      s=-
      c=IN IP4 [local_ip]
      t=0 0
      m=audio {rtp_port} RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
  ]]></send>
  <recv request="ACK"/>
  <recv request="BYE" timeout="60000"/>
  <send><![CDATA[
      {_OK_NO_BODY}
  ]]></send>"""
    scenario = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="callee">{body}
</scenario>
"""
    return _with_pcaps(folder, "callee.xml", scenario)


_INVITE = """INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=caller 1 1 IN IP4 [local_ip]
      s=-
      c=IN IP4 [local_ip]
      t=0 0"""

_ACK = """ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0"""

_OK_NO_BODY = """SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0"""


def _with_pcaps(folder: Path, name: str, scenario: str) -> Path:
    """Write the scenario where sipp runs, with the pcaps Debian ships copied into pcap/ beside it."""
    (folder / "pcap").mkdir(exist_ok=True)
    for pcap in ("g711a.pcap", "dtmf_2833_1.pcap", "dtmf_2833_9.pcap"):
        shutil.copy(SHIPPED_PCAPS / pcap, folder / "pcap" / pcap)
    path = folder / name
    path.write_text(scenario)
    return path


def _dump_scenario(name: str) -> str:
    # sipp exits with 99 after dumping, so only the output says whether it worked.
    sipp = shutil.which("sipp")
    assert sipp is not None, "sipp is not installed: `make test` installs Debian's sip-tester"
    dumped = subprocess.run([sipp, "-sd", name], capture_output=True, text=True, check=False).stdout
    assert "<scenario" in dumped, f"sipp did not dump its {name} scenario"
    return dumped


async def start_sipp(
    folder: Path, scenario: Path, *args: str, port: int | None = None, timeout_s: float = 90
) -> asyncio.subprocess.Process:
    """Start sipp for one call from `folder` (where its pcaps are) and wait until it listens; `args` name
    the target or role."""
    sip_port = port or free_port()
    argv = [
        "sipp",
        "-sf",
        str(scenario),
        "-m",
        "1",
        "-i",
        LOOPBACK,
        "-p",
        str(sip_port),
        "-mp",
        str(free_ports(SIPP_MEDIA_PORTS, socket.SOCK_DGRAM)),
        "-timeout",
        f"{int(timeout_s)}s",
        "-trace_err",
        "-error_file",
        str(folder / "sipp-errors.log"),
        "-nostdin",
        *args,
    ]
    (folder / "sipp-errors.log").unlink(missing_ok=True)
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=folder, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    # A callee must be listening before it is called; a bound port queues the INVITE until sipp reads it.
    deadline = time.monotonic() + 10
    while not await asyncio.to_thread(udp_bound, sip_port):
        if process.returncode is not None or time.monotonic() > deadline:
            if process.returncode is None:
                process.kill()
            output, _ = await process.communicate()
            said = output.decode(errors="replace")[-2000:]
            raise AssertionError(f"sipp did not bind UDP {sip_port} (exit {process.returncode}): {said}")
        await asyncio.sleep(0.02)
    return process


def udp_bound(port: int) -> bool:
    """Something has a UDP socket bound to `port` (read from /proc, so the check never takes the port)."""
    wanted = f":{port:04X}"
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with open(table) as rows:
            next(rows)
            if any(row.split()[1].endswith(wanted) for row in rows):
                return True
    return False


async def finished(folder: Path, process: asyncio.subprocess.Process, within_s: float = 100) -> SippRun:
    """Wait for sipp to end its call and collect what it said."""
    output, _ = await asyncio.wait_for(process.communicate(), within_s)
    errors_file = folder / "sipp-errors.log"
    errors = errors_file.read_text(errors="replace") if errors_file.exists() else ""
    assert process.returncode is not None
    return SippRun(process.returncode, output.decode(errors="replace"), errors)
