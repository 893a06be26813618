"""The failover probe's window, and why a connection failed in userspace mode (read from the
proxy's log); no root, no lab."""
from probes.failover import Sample
from testbed import state
from testbed.conformance import ProxyLogs

KEY = "default/probed/tcp"
VICTIM, LIVE = "10.244.1.2:9376", "10.244.0.3:9376"


def logs(tmp_path, monkeypatch, *lines: str) -> ProxyLogs:
    monkeypatch.setattr(state, "RUN_DIR", tmp_path)
    d = tmp_path / "lab" / "logs"
    d.mkdir(parents=True)
    f = d / "userspace-proxy-node-1.log"
    f.write_text("userspace-proxy: an old line (client 10.244.0.2:1000): before the probe\n")
    p = ProxyLogs("lab")
    with open(f, "a") as fh:
        fh.writelines(f"userspace-proxy: {line}\n" for line in lines)
    return p


def failed(at: float, client: str, outcome: str = "error") -> Sample:
    return Sample(at, outcome, "", "connection closed after 0 bytes, before a full header", client, 0.002)


def test_a_connection_in_flight_when_the_backend_died_is_what_kube_proxy_does(tmp_path, monkeypatch):
    p = logs(tmp_path, monkeypatch,
             f"connection from 10.244.0.2:5000 to {VICTIM} for {KEY} ended before the endpoint answered: "
             "Connection reset by peer")
    ((ok, why),) = p.explain([failed(0.002, "10.244.0.2:5000")], VICTIM, killed_within=0.008)
    assert ok and "reached the dying backend" in why and "Connection reset by peer" in why


def test_reaching_the_victim_after_it_died_or_a_live_backend_breaking_is_not(tmp_path, monkeypatch):
    p = logs(tmp_path, monkeypatch,
             f"connection from 10.244.0.2:5000 to {VICTIM} for {KEY} ended before the endpoint answered: x",
             f"connection from 10.244.0.2:5001 to {LIVE} for {KEY} ended before the endpoint answered: y")
    out = p.explain([failed(0.5, "10.244.0.2:5000"), failed(0.001, "10.244.0.2:5001")], VICTIM, 0.008)
    assert [ok for ok, _ in out] == [False, False]
    assert f"live backend {LIVE}" in out[1][1]


def test_giving_up_after_timed_out_dials_is_upstreams_behaviour_under_load(tmp_path, monkeypatch):
    c = "10.244.0.2:6000"
    p = logs(tmp_path, monkeypatch,
             f"dial failed for {KEY} to {LIVE} (client {c}): i/o timeout",
             f"dial failed for {KEY} to {VICTIM} (client {c}): Connection refused",
             f"dial failed for {KEY} to {LIVE} (client {c}): i/o timeout",
             f"dial failed for {KEY} to {VICTIM} (client {c}): Connection refused",
             f"failed to connect to an endpoint for {KEY} (client {c})")
    ((ok, why),) = p.explain([failed(1.0, c)], VICTIM, 0.008)
    assert ok and "gave up after 4 dials, 2 timed out" in why


def test_giving_up_with_every_dial_refused_and_silence_are_failures(tmp_path, monkeypatch):
    c = "10.244.0.2:6001"
    p = logs(tmp_path, monkeypatch, *[f"dial failed for {KEY} to {VICTIM} (client {c}): Connection refused"] * 4,
             f"failed to connect to an endpoint for {KEY} (client {c})")
    out = p.explain([failed(1.0, c), failed(1.0, "10.244.0.2:1000", "timeout")], VICTIM, 0.008)
    assert [ok for ok, _ in out] == [False, False]
    assert "logged nothing" in out[1][1]  # the line from before the probe does not count


def _http_server():
    import http.server
    import threading

    class Hostname(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"local"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hostname)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_the_window_follows_when_the_change_settled():
    """failover(settled=...): probing goes on until the condition holds, then `after` s more."""
    import time

    from probes.failover import failover

    server = _http_server()
    try:
        done_at = []

        def settled():
            return done_at and time.monotonic() >= done_at[0]

        t = failover(None, "127.0.0.1", server.server_address[1], lambda: done_at.append(time.monotonic() + 0.3),
                     before=0.05, after=0.1, interval=0.01, settled=settled)
        never = failover(None, "127.0.0.1", server.server_address[1], lambda: None, before=0.0, after=5.0,
                         interval=0.01, settled=lambda: False, settle_timeout=0.2)
    finally:
        server.shutdown()
        server.server_close()
    assert t.settled_at is not None and t.settled_at >= 0.3
    assert [s for s in t.samples if s.at > t.settled_at], "probing went on after it settled"
    assert all(s.outcome == "answered" and s.local.startswith("127.0.0.1:") for s in t.samples), t.samples[:3]
    assert never.settled_at is None and never.samples  # never settled: the timeline says so


def test_a_request_sent_before_the_change_is_timed_before_it_when_the_sleep_overshoots(monkeypatch):
    """On a busy machine the pre-change sleep overshoots: requests sent in the overshoot went out
    before the change ran and must be timed before it (at < 0), never as if sent after it (loaded
    run 9: the victim's answer, sent 17 ms before its kill, was counted 17 ms after)."""
    import time

    from probes import failover as fo

    server = _http_server()
    real_sleep = time.sleep
    # Only the module's pre-change sleep overshoots (by 0.2 s, a busy scheduler).
    monkeypatch.setattr(fo.time, "sleep", lambda s: real_sleep(s + 0.2) if s == 0.05 else real_sleep(s))
    try:
        t = fo.failover(None, "127.0.0.1", server.server_address[1], lambda: None, before=0.05, after=0.05,
                        interval=0.01)
    finally:
        monkeypatch.undo()
        server.shutdown()
        server.server_close()
    before = [s for s in t.samples if s.at < 0]
    assert len(before) >= 10, t.samples  # ~0.25 s of probing at 10 ms before the change
    assert min(s.at for s in before) <= -0.2, before[:3]  # the overshoot is before the change, not after it
