"""[sip] in config.toml becomes trunks and dispatch rules on the real server, idempotently."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from livekit import api

from tests.servers import API_KEY, API_SECRET, SipStack
from voicebot.config import InboundRoute, OutboundTrunk, SipSettings
from voicebot.livekit import LiveKitGateway
from voicebot.sip.provisioning import AGENT_ATTRIBUTE, SipProvisioner

pytestmark = [pytest.mark.integration, pytest.mark.sip]

RECEPTION = InboundRoute("reception", "agent-123", numbers=("+15550100",))
FAQ = InboundRoute("faq-line", "faq", allowed_addresses=("10.0.0.0/8",))
PBX = OutboundTrunk("pbx", "pbx.example.com:5060", ("+15550100",), "tcp")


@pytest.fixture
async def livekit(sip_stack: SipStack) -> AsyncIterator[LiveKitGateway]:
    gateway = LiveKitGateway(sip_stack.livekit.url, API_KEY, API_SECRET)
    # The server is shared with the phone-call tests, whose apps provision their own routes.
    await SipProvisioner(gateway, API_SECRET).apply(SipSettings())
    yield gateway
    await SipProvisioner(gateway, API_SECRET).apply(SipSettings())
    await gateway.close()


def names(items: list[api.SIPInboundTrunkInfo] | list[api.SIPDispatchRuleInfo]) -> list[str]:
    return sorted(item.name for item in items)


async def test_applying_the_same_config_twice_creates_nothing_the_second_time(
    livekit: LiveKitGateway,
) -> None:
    sip = SipSettings(enabled=True, inbound=(RECEPTION, FAQ), outbound=(PBX,))
    provisioner = SipProvisioner(livekit, API_SECRET)

    first = await provisioner.apply(sip)
    second = await provisioner.apply(sip)

    assert len(first.created) == 5
    assert second.created == second.updated == second.deleted == []
    assert names(await livekit.inbound_trunks()) == ["voicebot:faq-line", "voicebot:reception"]
    rules = {rule.name: rule for rule in await livekit.dispatch_rules()}
    assert sorted(rules) == ["voicebot:faq-line", "voicebot:reception"]
    reception = rules["voicebot:reception"]
    assert reception.rule.dispatch_rule_individual.room_prefix == "voicebot_agent-123"
    assert reception.attributes[AGENT_ATTRIBUTE] == "agent-123"
    assert [t.name for t in await livekit.outbound_trunks()] == ["voicebot:pbx"]
    assert set(provisioner.outbound_trunk_ids) == {"pbx"}


async def test_a_route_removed_from_config_is_removed_from_the_server_and_others_are_kept(
    livekit: LiveKitGateway,
) -> None:
    by_hand = await livekit.save_inbound_trunk(
        api.SIPInboundTrunkInfo(name="made-by-hand", numbers=["+1999"])
    )
    provisioner = SipProvisioner(livekit, API_SECRET)
    await provisioner.apply(SipSettings(enabled=True, inbound=(RECEPTION, FAQ), outbound=(PBX,)))

    report = await provisioner.apply(SipSettings(enabled=True, inbound=(RECEPTION,)))

    assert sorted(report.deleted) == [
        "dispatch rule voicebot:faq-line",
        "inbound trunk voicebot:faq-line",
        "outbound trunk voicebot:pbx",
    ]
    assert names(await livekit.inbound_trunks()) == ["made-by-hand", "voicebot:reception"]
    assert names(await livekit.dispatch_rules()) == ["voicebot:reception"]
    assert await livekit.outbound_trunks() == []
    await livekit.delete_trunk(by_hand.sip_trunk_id)


async def test_a_changed_route_updates_its_trunk_in_place(livekit: LiveKitGateway) -> None:
    provisioner = SipProvisioner(livekit, API_SECRET)
    await provisioner.apply(SipSettings(enabled=True, inbound=(RECEPTION,)))
    (before,) = await livekit.inbound_trunks()

    moved = replace(RECEPTION, numbers=("+15550111",))
    report = await provisioner.apply(SipSettings(enabled=True, inbound=(moved,)))

    (after,) = await livekit.inbound_trunks()
    assert report.updated == ["inbound trunk voicebot:reception"]
    assert after.sip_trunk_id == before.sip_trunk_id
    assert list(after.numbers) == ["+15550111"]
