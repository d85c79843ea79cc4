from __future__ import annotations

import socket

from pypod.run.dashboard import dashboard_port, dashboard_url, local_port_for


def test_the_port_comes_from_the_driver_pods_annotation():
    def pod(value):  # type: ignore[no-untyped-def]
        return {"metadata": {"annotations": {"pypod.dev/dashboard-port": value}}}

    assert dashboard_port(pod("8787")) == 8787
    assert [dashboard_port(pod(v)) for v in ("", "http", "0", "70000")] == [None] * 4
    assert dashboard_port({"metadata": {}}) is None and dashboard_port(None) is None
    assert dashboard_url(8787) == "http://127.0.0.1:8787/status"


def test_the_local_port_is_the_pods_own_when_free_here():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        other = local_port_for(port)
        assert other != port
    assert local_port_for(other) == other
