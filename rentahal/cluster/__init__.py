"""Many brokers, one installation: what brokers sharing a Redis and a PostgreSQL database tell
each other and hold in common (docs/cluster.md).

- `node`: this broker's id, its lease, and the channel brokers tell each other things on;
- `slots`: a worker's concurrent jobs counted across every broker, with leases;
- `hub`: the socket fan-out, for users connected to any broker;
- `reclaim`: the jobs of a broker whose lease lapsed, taken over by the living.
"""
