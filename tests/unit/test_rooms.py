"""Who an outbound call may go to: E.164 numbers under the trunk's allowed prefixes, nothing else."""

from __future__ import annotations

import pytest

from voicebot.config import OutboundTrunk
from voicebot.errors import DestinationNotAllowed
from voicebot.logs import mask_phone
from voicebot.rooms import check_destination

TRUNK = OutboundTrunk("pbx", "pbx.example.com", allowed_prefixes=("+1555", "+44"))


@pytest.mark.parametrize("to", ["+15550123", "+441632960961", "+1555"])
def test_numbers_under_an_allowed_prefix_may_be_dialled(to: str) -> None:
    check_destination(to, TRUNK)


@pytest.mark.parametrize(
    "to", ["+15560123", "+4", "15550123", "+1555012a", "alice", "100", "+1555*99", "+" + "1555" * 4]
)
def test_anything_else_is_refused(to: str) -> None:
    with pytest.raises(DestinationNotAllowed) as refused:
        check_destination(to, TRUNK)

    assert (refused.value.status, refused.value.code) == (403, "destination_not_allowed")
    assert to in str(refused.value), "the caller is told which number was refused"
    assert to not in refused.value.log_reason or len(to) <= 4
    assert mask_phone(to) in refused.value.log_reason


def test_a_trunk_without_prefixes_dials_nowhere() -> None:
    with pytest.raises(DestinationNotAllowed, match=r"allowed_prefixes in \[\[sip\.outbound\]\] is empty"):
        check_destination("+15550123", OutboundTrunk("pbx", "pbx.example.com"))
