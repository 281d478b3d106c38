"""SipProvisioner.apply against a fake LiveKit: creates, keeps, updates and deletes only what it should."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import TypeVar

import pytest
from livekit import api

from voicebot.config import InboundRoute, OutboundTrunk, SipSettings
from voicebot.sip.provisioning import (
    AGENT_ATTRIBUTE,
    SipProvisioner,
    fingerprint_key,
    inbound_trunk,
    outbound_trunk,
)

RECEPTION = InboundRoute("reception", "agent-123", numbers=("+15550100",), auth_password="s3cret")
FAQ = InboundRoute("faq-line", "faq", allowed_addresses=("10.0.0.0/8",))
PBX = OutboundTrunk("pbx", "pbx.example.com:5060", ("+15550100",), "tcp", auth_password="s3cret")
CONFIGURED = SipSettings(enabled=True, inbound=(RECEPTION, FAQ), outbound=(PBX,))
LIVEKIT_SECRET = "provisioning-test-secret-0123456789abcdef"

Info = TypeVar("Info", api.SIPInboundTrunkInfo, api.SIPOutboundTrunkInfo, api.SIPDispatchRuleInfo)


@dataclass
class FakeSipServer:
    """LiveKit's SIP API in memory (a SipGateway): ids handed out on create, passwords never echoed back."""

    inbound: dict[str, api.SIPInboundTrunkInfo] = field(default_factory=dict)
    outbound: dict[str, api.SIPOutboundTrunkInfo] = field(default_factory=dict)
    rules: dict[str, api.SIPDispatchRuleInfo] = field(default_factory=dict)
    writes: list[str] = field(default_factory=list)
    _next_id: int = 0

    def _new_id(self, prefix: str) -> str:
        self._next_id += 1
        return f"{prefix}_{self._next_id}"

    @staticmethod
    def _echo(item: Info) -> Info:
        copy = type(item)()
        copy.CopyFrom(item)
        if not isinstance(copy, api.SIPDispatchRuleInfo):
            copy.auth_password = ""  # the real server keeps it to itself
        return copy

    async def inbound_trunks(self) -> list[api.SIPInboundTrunkInfo]:
        return [self._echo(t) for t in self.inbound.values()]

    async def outbound_trunks(self) -> list[api.SIPOutboundTrunkInfo]:
        return [self._echo(t) for t in self.outbound.values()]

    async def dispatch_rules(self) -> list[api.SIPDispatchRuleInfo]:
        return [self._echo(r) for r in self.rules.values()]

    async def save_inbound_trunk(self, trunk: api.SIPInboundTrunkInfo) -> api.SIPInboundTrunkInfo:
        self.writes.append(f"{'update' if trunk.sip_trunk_id else 'create'} inbound {trunk.name}")
        stored = self._store(trunk, "sip_trunk_id", "ST", self.inbound)
        return self._echo(stored)

    async def save_outbound_trunk(self, trunk: api.SIPOutboundTrunkInfo) -> api.SIPOutboundTrunkInfo:
        self.writes.append(f"{'update' if trunk.sip_trunk_id else 'create'} outbound {trunk.name}")
        return self._echo(self._store(trunk, "sip_trunk_id", "ST", self.outbound))

    async def save_dispatch_rule(self, rule: api.SIPDispatchRuleInfo) -> api.SIPDispatchRuleInfo:
        self.writes.append(f"{'update' if rule.sip_dispatch_rule_id else 'create'} rule {rule.name}")
        return self._echo(self._store(rule, "sip_dispatch_rule_id", "SDR", self.rules))

    async def delete_trunk(self, trunk_id: str) -> None:
        trunk = self.inbound.pop(trunk_id, None) or self.outbound.pop(trunk_id)
        self.writes.append(f"delete trunk {trunk.name}")

    async def delete_dispatch_rule(self, rule_id: str) -> None:
        self.writes.append(f"delete rule {self.rules.pop(rule_id).name}")

    def _store(self, item: Info, id_field: str, prefix: str, table: dict[str, Info]) -> Info:
        stored = type(item)()
        stored.CopyFrom(item)
        item_id: str = getattr(stored, id_field)
        if not item_id:
            item_id = self._new_id(prefix)
            setattr(stored, id_field, item_id)
        elif item_id not in table:
            raise KeyError(f"no {item_id} to update")
        table[item_id] = stored
        return stored

    def names(self) -> dict[str, list[str]]:
        return {
            "inbound": sorted(t.name for t in self.inbound.values()),
            "outbound": sorted(t.name for t in self.outbound.values()),
            "rules": sorted(r.name for r in self.rules.values()),
        }


@pytest.fixture
def server() -> FakeSipServer:
    return FakeSipServer()


async def test_the_first_apply_creates_a_trunk_and_rule_per_route_and_a_trunk_per_outbound(
    server: FakeSipServer,
) -> None:
    provisioner = SipProvisioner(server, LIVEKIT_SECRET)

    report = await provisioner.apply(CONFIGURED)

    assert server.names() == {
        "inbound": ["voicebot:faq-line", "voicebot:reception"],
        "outbound": ["voicebot:pbx"],
        "rules": ["voicebot:faq-line", "voicebot:reception"],
    }
    assert len(report.created) == 5
    assert report.updated == report.deleted == report.unchanged == []
    trunks = {t.name: t for t in server.inbound.values()}
    rules = {r.name: r for r in server.rules.values()}
    reception = rules["voicebot:reception"]
    assert list(reception.trunk_ids) == [trunks["voicebot:reception"].sip_trunk_id]
    assert reception.rule.dispatch_rule_individual.room_prefix == "voicebot_agent-123"
    assert reception.attributes[AGENT_ATTRIBUTE] == "agent-123"
    assert list(trunks["voicebot:reception"].numbers) == ["+15550100"]
    assert list(trunks["voicebot:faq-line"].allowed_addresses) == ["10.0.0.0/8"]
    (pbx,) = server.outbound.values()
    assert (pbx.address, pbx.transport) == ("pbx.example.com:5060", api.SIPTransport.SIP_TRANSPORT_TCP)
    assert provisioner.outbound_trunk_ids == {"pbx": pbx.sip_trunk_id}


async def test_a_second_apply_of_the_same_settings_writes_nothing(server: FakeSipServer) -> None:
    await SipProvisioner(server, LIVEKIT_SECRET).apply(CONFIGURED)
    server.writes.clear()
    provisioner = SipProvisioner(server, LIVEKIT_SECRET)

    report = await provisioner.apply(CONFIGURED)

    # Passwords are not echoed back; the fingerprint in the metadata still says nothing changed.
    assert server.writes == []
    assert report.created == report.updated == report.deleted == []
    assert len(report.unchanged) == 5
    (pbx,) = server.outbound.values()
    assert provisioner.outbound_trunk_ids == {"pbx": pbx.sip_trunk_id}


async def test_a_changed_number_updates_only_that_routes_trunk_in_place(server: FakeSipServer) -> None:
    await SipProvisioner(server, LIVEKIT_SECRET).apply(CONFIGURED)
    ids_before = set(server.inbound)
    server.writes.clear()
    changed = replace(CONFIGURED, inbound=(replace(RECEPTION, numbers=("+15550199",)), FAQ))

    report = await SipProvisioner(server, LIVEKIT_SECRET).apply(changed)

    assert server.writes == ["update inbound voicebot:reception"]
    assert report.updated == ["inbound trunk voicebot:reception"]
    assert set(server.inbound) == ids_before
    trunks = {t.name: t for t in server.inbound.values()}
    assert list(trunks["voicebot:reception"].numbers) == ["+15550199"]


async def test_a_changed_agent_updates_only_that_routes_dispatch_rule(server: FakeSipServer) -> None:
    await SipProvisioner(server, LIVEKIT_SECRET).apply(CONFIGURED)
    server.writes.clear()
    changed = replace(CONFIGURED, inbound=(RECEPTION, replace(FAQ, agent_id="agent-123")))

    await SipProvisioner(server, LIVEKIT_SECRET).apply(changed)

    assert server.writes == ["update rule voicebot:faq-line"]
    rules = {r.name: r for r in server.rules.values()}
    assert rules["voicebot:faq-line"].attributes[AGENT_ATTRIBUTE] == "agent-123"


async def test_a_changed_password_updates_the_outbound_trunk(server: FakeSipServer) -> None:
    await SipProvisioner(server, LIVEKIT_SECRET).apply(CONFIGURED)
    server.writes.clear()

    await SipProvisioner(server, LIVEKIT_SECRET).apply(
        replace(CONFIGURED, outbound=(replace(PBX, auth_password="new"),))
    )

    assert server.writes == ["update outbound voicebot:pbx"]


async def test_what_voicebot_made_and_no_longer_configured_is_deleted_and_the_rest_left_alone(
    server: FakeSipServer,
) -> None:
    by_hand_trunk = await server.save_inbound_trunk(api.SIPInboundTrunkInfo(name="front-desk"))
    await server.save_dispatch_rule(
        api.SIPDispatchRuleInfo(name="front-desk", trunk_ids=[by_hand_trunk.sip_trunk_id])
    )
    await server.save_outbound_trunk(api.SIPOutboundTrunkInfo(name="carrier", address="sip.example.net"))
    await SipProvisioner(server, LIVEKIT_SECRET).apply(CONFIGURED)
    server.writes.clear()
    provisioner = SipProvisioner(server, LIVEKIT_SECRET)

    report = await provisioner.apply(replace(CONFIGURED, inbound=(RECEPTION,), outbound=()))

    # The rule goes before the trunk it points at.
    assert server.writes == [
        "delete rule voicebot:faq-line",
        "delete trunk voicebot:faq-line",
        "delete trunk voicebot:pbx",
    ]
    assert sorted(report.deleted) == [
        "dispatch rule voicebot:faq-line",
        "inbound trunk voicebot:faq-line",
        "outbound trunk voicebot:pbx",
    ]
    assert server.names() == {
        "inbound": ["front-desk", "voicebot:reception"],
        "outbound": ["carrier"],
        "rules": ["front-desk", "voicebot:reception"],
    }
    assert provisioner.outbound_trunk_ids == {}


async def test_the_metadata_holds_no_unkeyed_digest_of_a_password(server: FakeSipServer) -> None:
    """Regression: the config fingerprint was sha256 of the serialized trunk, password included, so anyone
    who could list trunks could test password guesses offline against the metadata."""
    await SipProvisioner(server, LIVEKIT_SECRET).apply(CONFIGURED)
    key = fingerprint_key(LIVEKIT_SECRET)
    password_digest = hashlib.sha256(b"s3cret").hexdigest()

    for sent in (inbound_trunk(RECEPTION, key), outbound_trunk(PBX, key)):
        metadata = sent.metadata
        fingerprint = json.loads(metadata)["config"]
        sent.metadata = ""
        unkeyed = hashlib.sha256(sent.SerializeToString(deterministic=True)).hexdigest()
        assert fingerprint
        assert not unkeyed.startswith(fingerprint), sent.name
        assert not password_digest.startswith(fingerprint), sent.name
        assert "s3cret" not in metadata
    stored = [t.metadata for t in server.inbound.values()] + [t.metadata for t in server.outbound.values()]
    assert len(stored) == 3
    assert not any(password_digest[:16] in metadata for metadata in stored)


async def test_another_api_secret_gives_other_fingerprints(server: FakeSipServer) -> None:
    await SipProvisioner(server, LIVEKIT_SECRET).apply(CONFIGURED)
    before = {t.name: t.metadata for t in server.outbound.values()}
    server.writes.clear()

    await SipProvisioner(server, "another-secret-0123456789abcdefghijkl").apply(CONFIGURED)

    assert "update outbound voicebot:pbx" in server.writes
    assert {t.name: t.metadata for t in server.outbound.values()} != before
