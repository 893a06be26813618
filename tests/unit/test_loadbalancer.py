"""The simulated cloud load balancer's nft rules (testbed.loadbalancer.render)."""
from testbed import loadbalancer, model
from testbed.control import reconcile


def cluster(mode="nodeport"):
    topo = model.load_file(model.builtin("service-types"))
    return reconcile(topo.with_lab(lb_mode=mode) if mode != "nodeport" else topo)[0]


def lb_ip(c, name):
    return next(i for i in c.services if i.service.name == name).load_balancer_ips[0]


def test_nodeport_mode_enforces_source_ranges_in_the_cloud_before_its_nat():
    c = cluster()
    text = loadbalancer.render(c, {}, "nodeport")
    ip = lb_ip(c, "lb-ranges")
    lines = text.splitlines()
    fw = [line for line in lines if " firewall " in line and line.startswith("add rule")]
    assert fw == [f'add rule ip testbed-lb firewall ip daddr {ip} tcp dport 80 ip saddr != {{ 203.0.113.0/24 }} drop '
                  f'comment "default/lb-ranges:80/tcp loadBalancerSourceRanges"']
    chain = lines.index("add chain ip testbed-lb firewall { type filter hook prerouting priority -150 ; }")
    assert chain < lines.index(fw[0]) < next(i for i, line in enumerate(lines) if "forward_in" in line)
    assert f"ip daddr {ip} tcp dport 80 dnat ip to" in text  # allowed sources are still NATed to the NodePorts


def test_passthrough_leaves_source_ranges_to_the_nodes():
    c = cluster("passthrough")
    text = loadbalancer.render(c, {}, "passthrough")
    assert "firewall" not in text and "203.0.113.0/24" not in text
    assert f"ip daddr {lb_ip(c, 'lb-ranges')} tcp dport 80 notrack" in text


def test_no_ranges_no_firewall_chain():
    c = cluster()
    text = loadbalancer.render(c, {}, "nodeport")
    assert text.count("add rule ip testbed-lb firewall") == 1  # only lb-ranges has ranges
