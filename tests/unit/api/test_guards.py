"""The pieces of api/guards.py: host names without ports and origins compared in one form."""

from __future__ import annotations

import pytest

from voicebot.api.guards import host_name, origin_of


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("127.0.0.1:8001", "127.0.0.1"),
        ("LocalHost", "localhost"),
        ("[::1]:8001", "::1"),
        ("[::1]", "::1"),
        ("bot.example.com.:443", "bot.example.com"),
        ("", ""),
    ],
)
def test_host_names_lose_their_port_and_case(header: str, name: str) -> None:
    assert host_name(header) == name


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://App.example.com:443", "https://app.example.com"),
        ("http://127.0.0.1:8001/", "http://127.0.0.1:8001"),
        ("http://[::1]:80", "http://[::1]"),
        ("null", None),
        ("file:///etc", None),
        ("http://host:99999", None),
    ],
)
def test_origins_are_compared_in_one_form(url: str, origin: str | None) -> None:
    assert origin_of(url) == origin
