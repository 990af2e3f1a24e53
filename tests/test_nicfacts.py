"""The NIC-facts format (tracer.nicfacts): what the agent, lab record and the several-hosts
session write into interface descriptions and statistics comments, and what the reader
takes back.  Read back by tshark too, in tests/test_writer.py."""

from __future__ import annotations

import pytest

from tracer import nicfacts


def test_facts_round_trip_and_none_is_left_out():
    text = nicfacts.encode(host="hostx", netns="trc-fv-hostx", kind="veth", container="A", peer=None, mtu=1450)
    assert text == "host=hostx netns=trc-fv-hostx kind=veth container=A mtu=1450"
    assert nicfacts.decode(text) == {
        "host": "hostx",
        "netns": "trc-fv-hostx",
        "kind": "veth",
        "container": "A",
        "mtu": "1450",
    }


@pytest.mark.parametrize("value", ["host x", "", "a\tb", "x\ny"])
def test_a_value_that_could_not_be_read_back_is_refused(value):
    with pytest.raises(ValueError):
        nicfacts.encode(host=value)


@pytest.mark.parametrize("text", ["Intel(R) Ethernet", "eth0 uplink=yes", "=x", "   "])
def test_another_tools_description_is_not_facts(text):
    assert nicfacts.decode(text) is None


def test_with_host_puts_the_host_first_and_replaces_any():
    assert nicfacts.with_host("kind=veth host=old container=A", "y") == "host=y kind=veth container=A"
    assert nicfacts.with_host(None, "y") == "host=y"
    # another tool's description: the caller's own facts instead
    assert nicfacts.with_host("Intel(R) Ethernet", "y", {"kind": "physical"}) == "host=y kind=physical"


def test_state_comments():
    for word in nicfacts.STATE_WORDS:
        comment = nicfacts.state_comment(word, f"eth0@ns is {word}")
        assert nicfacts.parse_state(comment) == (word, f"eth0@ns is {word}")
    assert nicfacts.parse_state("gone") == ("gone", None)  # as older agents wrote it
    assert nicfacts.parse_state("gone: host y: refused") == ("gone", "host y: refused")
    assert nicfacts.parse_state("going somewhere") is None
    assert nicfacts.parse_state("drops: 3") is None
