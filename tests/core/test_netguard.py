"""Outgoing URLs on private, loopback and link-local addresses are refused unless allowed."""

from __future__ import annotations

import pytest

from core import netguard
from core.netguard import UnsafeURLError, parse_allow_list, resolve_checked


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hooks",
        "https://127.0.0.1:8443/",
        "http://10.1.2.3/",
        "http://172.16.0.1/",
        "http://192.168.1.10/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/",
        "http://[fe80::1]/",
        "http://[fd00::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
        "http://100.64.0.1/",
        "http://localhost:8080/",  # a name that resolves to loopback
    ],
)
def test_private_loopback_and_link_local_addresses_are_refused(url):
    with pytest.raises(UnsafeURLError, match="private, loopback or link-local"):
        resolve_checked(url, allow=[])


def test_a_name_is_refused_when_any_of_its_addresses_is_private(monkeypatch):
    import ipaddress

    monkeypatch.setattr(
        netguard,
        "_resolve",
        lambda host, port: [
            ipaddress.ip_address("93.184.216.34"),
            ipaddress.ip_address("10.0.0.5"),
        ],
    )
    with pytest.raises(UnsafeURLError, match=r"10\.0\.0\.5"):
        resolve_checked("https://mixed.example/", allow=[])


def test_public_addresses_pass():
    assert [str(a) for a in resolve_checked("https://93.184.216.34/hooks", allow=[])] == [
        "93.184.216.34"
    ]


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://93.184.216.34/", "https://"),
        ("https://user:pw@93.184.216.34/", "user name or password"),
        ("https:///nohost", "no host"),
        ("https://no-such-host.invalid/", "does not resolve"),
    ],
)
def test_malformed_urls_are_refused_with_the_reason(url, why):
    with pytest.raises(UnsafeURLError, match=why):
        resolve_checked(url, allow=[])


def test_the_allow_list_admits_an_exact_address_and_port_or_a_network():
    allow = parse_allow_list("127.0.0.1:8701, [::1]:8701, 10.20.0.0/16")
    assert resolve_checked("http://127.0.0.1:8701/", allow=allow)
    assert resolve_checked("http://[::1]:8701/", allow=allow)
    assert resolve_checked("http://10.20.3.4:9999/", allow=allow)
    with pytest.raises(UnsafeURLError):
        resolve_checked("http://127.0.0.1:8702/", allow=allow)  # another port
    with pytest.raises(UnsafeURLError):
        resolve_checked("http://10.21.0.1/", allow=allow)


def test_the_allow_list_comes_from_settings(settings):
    settings.BUSBAR_DOWNSTREAM_ALLOW = "127.0.0.1:8701"
    assert resolve_checked("http://127.0.0.1:8701/")
    settings.BUSBAR_DOWNSTREAM_ALLOW = ""
    with pytest.raises(UnsafeURLError):
        resolve_checked("http://127.0.0.1:8701/")


def test_a_malformed_allow_list_entry_is_named():
    with pytest.raises(ValueError, match="'not-an-ip'"):
        parse_allow_list("127.0.0.1:1,not-an-ip")
