"""One module per reproduction; each defines REPRO (a catalogue.Repro). Add a module here and to
MODULES to extend the catalogue."""
MODULES = (
    "stale_udp_clusterip",
    "dead_backend_no_probe",
    "nft_etp_local_lb_from_node",
    "stale_udp_nodeport",
    "etp_cluster_source_lost",
    "udp_scaled_to_zero",
    "udp_before_the_service",
    "ipvs_lb_source_ranges_from_node",
    "hairpin_mode_none",
    "invalid_conntrack_reset",
    "invalid_conntrack_reset_nft",
    "cve_2020_8558_localnet",
)
