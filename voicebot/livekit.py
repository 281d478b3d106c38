"""Everything that talks to the LiveKit server: rooms, tokens, SIP trunks, calls and reachability."""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal, TypeVar

import aiohttp
import structlog
from google.protobuf.duration_pb2 import Duration
from livekit import api

from voicebot.errors import DialFailed, LiveKitUnavailable

log = structlog.get_logger(__name__)

T = TypeVar("T")
ParticipantKind = Literal["standard", "egress", "ingress", "sip", "agent"]

USER_IDENTITY_PREFIX = "user-"
# Agent identities (next issue) use their own prefix, so a user token can never claim one.
AGENT_IDENTITY_PREFIX = "agent-"


@dataclass(frozen=True)
class RoomAccess:
    """What a client needs to join a room: its name, a join token and where LiveKit is."""

    room_name: str
    access_token: str
    livekit_url: str
    identity: str


@dataclass(frozen=True)
class LiveKitProbe:
    """The result of one reachability check."""

    reachable: bool
    rtt_ms: float | None
    error: str | None = None


class LiveKitGateway:
    """The one place that builds LiveKit server API requests and join tokens."""

    def __init__(
        self,
        url: str,
        api_key: str,
        api_secret: str,
        *,
        public_url: str = "",
        request_timeout_s: float = 5.0,
    ) -> None:
        self.url = url
        self.public_url = public_url or url
        self._api_key = api_key
        self._api_secret = api_secret
        self._http_url = url.replace("ws", "http", 1) if url.startswith("ws") else url
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        # failover is for LiveKit Cloud regions; a self-hosted server has one origin.
        self._api = api.LiveKitAPI(url, api_key, api_secret, session=self._session, failover=False)

    async def close(self) -> None:
        """Release the HTTP connection pool."""
        await self._api.aclose()
        await self._session.close()

    async def create_room(self, name: str, *, empty_timeout_s: int, departure_timeout_s: int) -> None:
        """Create a room on the server (idempotent for an existing name)."""
        request = api.CreateRoomRequest(
            name=name, empty_timeout=empty_timeout_s, departure_timeout=departure_timeout_s
        )
        await self._call("create the room", self._api.room.create_room(request))

    async def delete_room(self, name: str) -> None:
        """Close a room and disconnect everyone in it."""
        await self._call("delete the room", self._api.room.delete_room(api.DeleteRoomRequest(room=name)))

    async def room_exists(self, name: str) -> bool:
        """Whether the server has an open room with this name."""
        return name in await self.room_names([name])

    async def room_names(self, only: list[str] | None = None) -> set[str]:
        """Names of the open rooms on the server (or of those among `only`)."""
        request = api.ListRoomsRequest(names=only or [])
        response = await self._call("list rooms", self._api.room.list_rooms(request))
        return {room.name for room in response.rooms}

    async def close_every_room(self) -> None:
        """Delete every room of a server about to stop, so people see the call end, not a reconnect;
        logged, never raised."""
        try:
            names = await self.room_names()
            for name in names:
                await self.delete_room(name)
        except LiveKitUnavailable as exc:
            log.warning("rooms_not_closed", reason=str(exc))
        else:
            log.info("rooms_closed", rooms=len(names))

    async def participants(self, room_name: str) -> list[api.ParticipantInfo]:
        """Everyone in the room now, as the server describes them."""
        response = await self._call(
            "list participants",
            self._api.room.list_participants(api.ListParticipantsRequest(room=room_name)),
        )
        return list(response.participants)

    async def participant_identities(self, room_name: str) -> list[str]:
        """Identities of everyone in the room now."""
        return [participant.identity for participant in await self.participants(room_name)]

    async def has_audio_track(self, room_name: str, identity: str) -> bool:
        """Whether the server lists an audio track of this participant (False if it is not in the room)."""
        request = api.RoomParticipantIdentity(room=room_name, identity=identity)
        try:
            participant = await self._call("get the participant", self._api.room.get_participant(request))
        except api.TwirpError:
            return False
        return any(track.type == api.TrackType.AUDIO for track in participant.tracks)

    async def remove_participant(self, room_name: str, identity: str) -> None:
        """Disconnect one participant; for a phone caller, that hangs up the call."""
        request = api.RoomParticipantIdentity(room=room_name, identity=identity)
        await self._call("remove the participant", self._api.room.remove_participant(request))

    async def inbound_trunks(self) -> list[api.SIPInboundTrunkInfo]:
        """Every inbound SIP trunk on the server."""
        response = await self._call(
            "list inbound trunks", self._api.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())
        )
        return list(response.items)

    async def outbound_trunks(self) -> list[api.SIPOutboundTrunkInfo]:
        """Every outbound SIP trunk on the server."""
        response = await self._call(
            "list outbound trunks", self._api.sip.list_outbound_trunk(api.ListSIPOutboundTrunkRequest())
        )
        return list(response.items)

    async def dispatch_rules(self) -> list[api.SIPDispatchRuleInfo]:
        """Every SIP dispatch rule on the server."""
        response = await self._call(
            "list dispatch rules", self._api.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())
        )
        return list(response.items)

    async def save_inbound_trunk(self, trunk: api.SIPInboundTrunkInfo) -> api.SIPInboundTrunkInfo:
        """Create the trunk, or replace the one with its sip_trunk_id."""
        if trunk.sip_trunk_id:
            return await self._call(
                "update an inbound trunk", self._api.sip.update_inbound_trunk(trunk.sip_trunk_id, trunk)
            )
        request = api.CreateSIPInboundTrunkRequest(trunk=trunk)
        return await self._call("create an inbound trunk", self._api.sip.create_inbound_trunk(request))

    async def save_outbound_trunk(self, trunk: api.SIPOutboundTrunkInfo) -> api.SIPOutboundTrunkInfo:
        """Create the trunk, or replace the one with its sip_trunk_id."""
        if trunk.sip_trunk_id:
            return await self._call(
                "update an outbound trunk", self._api.sip.update_outbound_trunk(trunk.sip_trunk_id, trunk)
            )
        request = api.CreateSIPOutboundTrunkRequest(trunk=trunk)
        return await self._call("create an outbound trunk", self._api.sip.create_outbound_trunk(request))

    async def save_dispatch_rule(self, rule: api.SIPDispatchRuleInfo) -> api.SIPDispatchRuleInfo:
        """Create the rule, or replace the one with its sip_dispatch_rule_id."""
        if rule.sip_dispatch_rule_id:
            return await self._call(
                "update a dispatch rule", self._api.sip.update_dispatch_rule(rule.sip_dispatch_rule_id, rule)
            )
        request = api.CreateSIPDispatchRuleRequest(dispatch_rule=rule)
        return await self._call("create a dispatch rule", self._api.sip.create_dispatch_rule(request))

    async def delete_trunk(self, trunk_id: str) -> None:
        """Delete an inbound or outbound trunk."""
        request = api.DeleteSIPTrunkRequest(sip_trunk_id=trunk_id)
        await self._call("delete a trunk", self._api.sip.delete_trunk(request))

    async def delete_dispatch_rule(self, rule_id: str) -> None:
        """Delete a dispatch rule."""
        request = api.DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id=rule_id)
        await self._call("delete a dispatch rule", self._api.sip.delete_dispatch_rule(request))

    async def dial(
        self, trunk_id: str, to: str, room_name: str, *, identity: str, ringing_timeout_s: int
    ) -> api.SIPParticipantInfo:
        """Call `to` through an outbound trunk into `room_name`; returns once answered, raises DialFailed."""
        request = api.CreateSIPParticipantRequest(
            sip_trunk_id=trunk_id,
            sip_call_to=to,
            room_name=room_name,
            participant_identity=identity,
            participant_name=f"Phone {to}",
            wait_until_answered=True,
            ringing_timeout=Duration(seconds=ringing_timeout_s),
        )
        try:
            return await self._call("place the call", self._api.sip.create_sip_participant(request))
        except api.SipCallError as exc:
            raise DialFailed(to, exc.sip_status_code, exc.sip_status or exc.message) from exc
        except api.TwirpError as exc:
            raise DialFailed(to, None, exc.message) from exc

    def user_token(self, room_name: str, *, ttl_s: int) -> tuple[str, str]:
        """A join token for a fresh user identity, valid only in `room_name`; returns (identity, jwt).

        `ttl_s` is livekit.token_ttl_s, which caps every join token voicebot signs.
        """
        identity = f"{USER_IDENTITY_PREFIX}{secrets.token_hex(6)}"
        return identity, self.token(identity, join_grants(room_name), ttl_s=ttl_s, name="Caller")

    def token(
        self,
        identity: str,
        grants: api.VideoGrants,
        *,
        ttl_s: int,
        kind: ParticipantKind = "standard",
        name: str = "",
    ) -> str:
        """A token signed with the configured key."""
        return sign_token(
            self._api_key, self._api_secret, identity, grants, ttl_s=ttl_s, kind=kind, name=name
        )

    async def probe(self) -> LiveKitProbe:
        """Check that the server answers its health endpoint, and how fast."""
        started = time.perf_counter()
        try:
            async with self._session.get(f"{self._http_url.rstrip('/')}/") as response:
                await response.read()
                if response.status != 200:
                    return LiveKitProbe(False, None, f"answered HTTP {response.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return LiveKitProbe(False, None, _describe(exc))
        return LiveKitProbe(True, round((time.perf_counter() - started) * 1000, 2))

    async def _call(self, action: str, request: Awaitable[T]) -> T:
        try:
            return await request
        except api.TwirpError as exc:
            if exc.status >= 500:
                raise LiveKitUnavailable(action, f"server error {exc.code}: {exc.message}") from exc
            raise
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise LiveKitUnavailable(action, _describe(exc)) from exc


# A caller talks to an agent: a microphone is all a person's token may publish, never a camera or a screen.
USER_PUBLISH_SOURCES = ("microphone",)


def join_grants(room_name: str) -> api.VideoGrants:
    """What a person may do in one room: join, publish their microphone, subscribe, send data; no admin."""
    return api.VideoGrants(
        room_join=True,
        room=room_name,
        can_publish=True,
        can_publish_sources=list(USER_PUBLISH_SOURCES),
        can_subscribe=True,
        can_publish_data=True,
    )


def join_ttl(requested_s: int | None, limit_s: int) -> int:
    """How long a join token lives: what was asked, but never longer than `limit_s` (livekit.token_ttl_s)."""
    if requested_s is None or requested_s < 1:
        return limit_s
    return min(requested_s, limit_s)


def sign_token(
    api_key: str,
    api_secret: str,
    identity: str,
    grants: api.VideoGrants,
    *,
    ttl_s: int,
    kind: ParticipantKind = "standard",
    name: str = "",
) -> str:
    """A JWT for `identity` with `grants`, signed with the key pair."""
    return (
        api.AccessToken(api_key, api_secret)
        .with_identity(identity)
        .with_name(name or identity)
        .with_kind(kind)
        .with_grants(grants)
        .with_ttl(timedelta(seconds=ttl_s))
        .to_jwt()
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}"
    return type(exc).__name__ if not str(exc) else str(exc)
