"""probes.stray's pure parts (no root): when an HTTP answer is complete, which captured segment is
the backend's last, and what counts as a reset connection."""
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from probes.capture import Captured
from probes.stray import Stray, _complete, _last_from


def test_an_answer_is_complete_once_its_content_length_is_read():
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n"
    assert not _complete(head + b"we") and _complete(head + b"web")
    assert _complete(b"HTTP/1.1 204 No Content\r\n\r\n")


def test_the_backends_last_segment_is_the_last_one_from_its_address_and_port():
    def seg(src, sport, seq):
        return Captured(0.0, True, bytes(Ether() / IP(src=src, dst="10.244.0.2") / TCP(sport=sport, dport=40000, seq=seq)))
    packets = [seg("10.244.0.3", 9376, 1), seg("10.244.0.3", 9376, 7), seg("10.244.0.3", 9999, 9),
               seg("10.244.0.9", 9376, 11)]
    assert _last_from(packets, "10.244.0.3", 9376)[TCP].seq == 7
    assert _last_from(packets, "10.244.0.4", 9376) is None
    answered = packets + [Captured(0.0, True, bytes(Ether() / IP(src="10.244.0.3", dst="10.244.0.2")
                                                    / TCP(sport=9376, dport=40000, seq=13) / b"...\r\n\r\nweb"))]
    assert _last_from(packets, "10.244.0.3", 9376, ending=b"web") is None  # the answer's end not captured yet
    assert _last_from(answered, "10.244.0.3", 9376, ending=b"web")[TCP].seq == 13


def test_reset_and_closed_connections_count_as_reset():
    assert Stray("web", "reset", 1, 1, True).reset and Stray("web", "closed", 1, 1, True).reset
    assert not Stray("web", "answered", 0, 0, True).reset and not Stray("web", "timeout", 0, 0, True).reset
