"""Many installations, one federation (SPEC §12): an installation forwards a query it cannot
serve to a peer installation that advertises what it needs (docs/cluster.md).

- `wire`: what peers say to each other (an advertisement, a forwarded query, its outcome);
- `peers`: the peers a sysop added, asked periodically what they serve, and routed to as a
  last resort when no local worker is alive for a query;
- the peer's side is `rentahal.api.rest.federation`, its client `rentahal.backends.federation`.
"""
