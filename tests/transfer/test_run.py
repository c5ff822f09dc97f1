"""transfer/run.py without a server: options, presets' limits and endpoints put together
the same way for the CLI and the job process."""

from __future__ import annotations

from yippiemove.policy import providers
from yippiemove.policy.providers import GENERIC
from yippiemove.policy.rules import FolderRules
from yippiemove.transfer.model import Endpoint, Options
from yippiemove.transfer.run import make_options, prepare, worker_counts


def test_make_options_defaults_are_the_options_own():
    opts = make_options()
    assert opts == Options()
    assert opts.retries == Options.retries == 5  # the one default (the service passes 3)


def test_make_options_connections_and_timeouts():
    assert worker_counts(None) == {}
    assert worker_counts(4) == {"connections": 4, "far_connections": 4}
    opts = make_options(connections=3, idle_timeout=10.0, include=("A",), exclude=["B"])
    assert (opts.connections, opts.far_connections) == (3, 3)
    assert (opts.include, opts.exclude) == (["A"], ["B"])
    # The connect timeout is the smaller of its default and the idle timeout, unless given.
    assert opts.connect_timeout == 10.0
    assert make_options(idle_timeout=300.0).connect_timeout == Options.connect_timeout
    assert make_options(idle_timeout=10.0, connect_timeout=20.0).connect_timeout == 20.0
    rules = FolderRules(special=False)
    assert make_options(rules=rules).rules is rules


def test_prepare_finds_presets_by_host_and_applies_their_limits():
    gmail = Endpoint("imap.gmail.com", 993, "me@gmail.com", security="tls")
    local = Endpoint("127.0.0.1", 143, "me")
    t = prepare(local, gmail, make_options(connections=16))
    assert (t.source_provider, t.dest_provider.key) == (GENERIC, "gmail")
    assert t.options.connections == 15 and t.options.max_message_size is not None
    assert t.presets() == {"source": "generic", "dest": "gmail", "notes": t.notes}
    assert any("connections lowered from 16 to 15" in n for n in t.notes)
    assert t.bandwidth_warnings(1) == []
    assert t.bandwidth_warnings(10**12)  # over Gmail's daily upload cap
    # A preset given (the CLI's --dest-preset, or a bare address) wins over the host.
    workspace = providers.by_key("google-workspace")
    t = prepare(local, gmail, Options(), dest_provider=workspace)
    assert t.dest_provider is workspace


def test_limits_are_plain_values():
    lim = providers.limits(GENERIC, providers.by_key("gmail"))
    assert lim.max_connections == 15 and "Gmail (the destination)" in lim.connections_set_by
    assert lim.connections_note(16).startswith("connections lowered from 16 to 15: Gmail")
    assert lim.max_message_size_label.startswith("Gmail's ")
    assert providers.limits(GENERIC, GENERIC) == providers.Limits()
