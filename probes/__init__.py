"""Probes that run inside a lab network namespace and return data (they never print).

- `probes.connect`: one TCP (HTTP GET) or UDP request as a `Result`; many as a `Distribution`.
- `probes.stats`: chi-square goodness of fit (`chi_square_p`), no scipy needed.
- `probes.poll`: `wait_until`, bounded polling used instead of sleeps.
"""
