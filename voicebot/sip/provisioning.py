"""Makes the LiveKit server's SIP trunks and dispatch rules match the [sip] section of config.toml."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import structlog
from livekit import api

from voicebot.config import InboundRoute, OutboundTrunk, SipSettings
from voicebot.rooms import ROOM_PREFIX

# Only what carries this prefix is voicebot's: trunks and rules made by hand are left alone.
MANAGED_PREFIX = "voicebot:"
# The dispatch rule sets this attribute on the caller, so a webhook knows which agent the call is for.
AGENT_ATTRIBUTE = "voicebot.agent_id"
_TRANSPORTS = {
    "auto": api.SIPTransport.SIP_TRANSPORT_AUTO,
    "udp": api.SIPTransport.SIP_TRANSPORT_UDP,
    "tcp": api.SIPTransport.SIP_TRANSPORT_TCP,
    "tls": api.SIPTransport.SIP_TRANSPORT_TLS,
}

log = structlog.get_logger(__name__)


class SipGateway(Protocol):
    """The LiveKit server API calls provisioning makes; voicebot.livekit.LiveKitGateway's."""

    async def inbound_trunks(self) -> list[api.SIPInboundTrunkInfo]: ...
    async def outbound_trunks(self) -> list[api.SIPOutboundTrunkInfo]: ...
    async def dispatch_rules(self) -> list[api.SIPDispatchRuleInfo]: ...
    async def save_inbound_trunk(self, trunk: api.SIPInboundTrunkInfo) -> api.SIPInboundTrunkInfo: ...
    async def save_outbound_trunk(self, trunk: api.SIPOutboundTrunkInfo) -> api.SIPOutboundTrunkInfo: ...
    async def save_dispatch_rule(self, rule: api.SIPDispatchRuleInfo) -> api.SIPDispatchRuleInfo: ...
    async def delete_trunk(self, trunk_id: str) -> None: ...
    async def delete_dispatch_rule(self, rule_id: str) -> None: ...


class _Named(Protocol):
    name: str
    metadata: str

    def SerializeToString(self, *, deterministic: bool = ...) -> bytes: ...


Item = TypeVar("Item", bound=_Named)


@dataclass
class ProvisioningReport:
    """What one run changed on the server, by managed name."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def managed_name(name: str) -> str:
    """The server-side name of a configured route or trunk."""
    return f"{MANAGED_PREFIX}{name}"


def fingerprint_key(api_secret: str) -> bytes:
    """The key of the config fingerprints, derived from the LiveKit API secret the server already holds."""
    return hmac.new(api_secret.encode(), b"voicebot sip config fingerprint", hashlib.sha256).digest()


def inbound_trunk(route: InboundRoute, key: bytes) -> api.SIPInboundTrunkInfo:
    """The inbound trunk a route needs: who may call, and to which numbers."""
    return _fingerprinted(
        api.SIPInboundTrunkInfo(
            name=managed_name(route.name),
            numbers=list(route.numbers),
            allowed_addresses=list(route.allowed_addresses),
            auth_username=route.auth_username,
            auth_password=route.auth_password,
        ),
        key,
    )


def dispatch_rule(route: InboundRoute, trunk_id: str, key: bytes) -> api.SIPDispatchRuleInfo:
    """A rule that puts each call on the route's trunk in its own room, voicebot_<agent_id>_<caller>_<id>."""
    individual = api.SIPDispatchRuleIndividual(room_prefix=f"{ROOM_PREFIX}{route.agent_id}")
    return _fingerprinted(
        api.SIPDispatchRuleInfo(
            name=managed_name(route.name),
            trunk_ids=[trunk_id],
            rule=api.SIPDispatchRule(dispatch_rule_individual=individual),
            attributes={AGENT_ATTRIBUTE: route.agent_id},
        ),
        key,
    )


def outbound_trunk(trunk: OutboundTrunk, key: bytes) -> api.SIPOutboundTrunkInfo:
    """The outbound trunk calls are placed through."""
    return _fingerprinted(
        api.SIPOutboundTrunkInfo(
            name=managed_name(trunk.name),
            address=trunk.address,
            numbers=list(trunk.numbers),
            transport=_TRANSPORTS[trunk.transport],
            auth_username=trunk.auth_username,
            auth_password=trunk.auth_password,
        ),
        key,
    )


def _fingerprinted(item: Item, key: bytes) -> Item:
    # The server may not echo every field back (passwords), so a digest of what we asked for, kept in
    # the item's metadata, is what tells whether the config changed since the last run. It is keyed:
    # a plain hash of a serialized trunk would let anyone who reads the metadata try passwords offline.
    # A new API secret changes every fingerprint, so everything is rewritten once; nothing worse.
    digest = hmac.new(key, item.SerializeToString(deterministic=True), hashlib.sha256).hexdigest()[:16]
    item.metadata = json.dumps({"managed_by": "voicebot", "config": digest})
    return item


class SipProvisioner:
    """Creates, updates and deletes voicebot's trunks and rules; remembers the outbound trunks' ids."""

    def __init__(self, livekit: SipGateway, api_secret: str) -> None:
        self._livekit = livekit
        self._key = fingerprint_key(api_secret)
        self.outbound_trunk_ids: dict[str, str] = {}

    async def apply(self, sip: SipSettings) -> ProvisioningReport:
        """Make the server match `sip`; running it twice changes nothing the second time."""
        report = ProvisioningReport()
        lk = self._livekit
        rules = _managed(await lk.dispatch_rules())
        # Rules go first when removing, since they point at trunks.
        for name in set(rules) - {managed_name(r.name) for r in sip.inbound}:
            await lk.delete_dispatch_rule(rules.pop(name).sip_dispatch_rule_id)
            report.deleted.append(f"dispatch rule {name}")
        trunk_ids = await _sync(
            _managed(await lk.inbound_trunks()),
            [inbound_trunk(route, self._key) for route in sip.inbound],
            key=lambda t: t.sip_trunk_id,
            save=lk.save_inbound_trunk,
            delete=lk.delete_trunk,
            kind="inbound trunk",
            report=report,
        )
        await _sync(
            rules,
            [dispatch_rule(route, trunk_ids[managed_name(route.name)], self._key) for route in sip.inbound],
            key=lambda r: r.sip_dispatch_rule_id,
            save=lk.save_dispatch_rule,
            delete=lk.delete_dispatch_rule,
            kind="dispatch rule",
            report=report,
        )
        outbound_ids = await _sync(
            _managed(await lk.outbound_trunks()),
            [outbound_trunk(trunk, self._key) for trunk in sip.outbound],
            key=lambda t: t.sip_trunk_id,
            save=lk.save_outbound_trunk,
            delete=lk.delete_trunk,
            kind="outbound trunk",
            report=report,
        )
        self.outbound_trunk_ids = {
            name.removeprefix(MANAGED_PREFIX): id_ for name, id_ in outbound_ids.items()
        }
        log.info(
            "sip_provisioned",
            created=report.created,
            updated=report.updated,
            deleted=report.deleted,
            unchanged=len(report.unchanged),
        )
        return report


def _managed(items: Iterable[Item]) -> dict[str, Item]:
    return {item.name: item for item in items if item.name.startswith(MANAGED_PREFIX)}


async def _sync(
    current: dict[str, Item],
    desired: list[Item],
    *,
    key: Callable[[Item], str],
    save: Callable[[Item], Awaitable[Item]],
    delete: Callable[[str], Awaitable[None]],
    kind: str,
    report: ProvisioningReport,
) -> dict[str, str]:
    """Save what is new or changed, delete what is no longer wanted; returns the ids by name."""
    ids: dict[str, str] = {}
    for item in desired:
        existing = current.pop(item.name, None)
        label = f"{kind} {item.name}"
        if existing is not None and existing.metadata == item.metadata:
            ids[item.name] = key(existing)
            report.unchanged.append(label)
            continue
        if existing is not None:
            _set_id(item, key(existing))
        saved = await save(item)
        ids[item.name] = key(saved)
        (report.updated if existing is not None else report.created).append(label)
    for name, stale in current.items():
        await delete(key(stale))
        report.deleted.append(f"{kind} {name}")
    return ids


def _set_id(item: _Named, id_: str) -> None:
    field_name = "sip_dispatch_rule_id" if isinstance(item, api.SIPDispatchRuleInfo) else "sip_trunk_id"
    setattr(item, field_name, id_)
