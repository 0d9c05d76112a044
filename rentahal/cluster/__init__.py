"""Many brokers, one installation: what brokers sharing a Redis and a PostgreSQL database tell
each other and hold in common (docs/cluster.md).

- `node`: this broker's id, its lease, and the channel brokers tell each other things on;
- `queue`: the realms' lines, shared, so users take turns across every broker;
- `slots`: a worker's concurrent jobs counted across every broker, with leases;
- `rate_limits`: token buckets counted across every broker;
- `hub`: the socket fan-out and query watchers, for users connected to any broker;
- `cancelling`: a cancel reaching the broker that runs the job;
- `reclaim`: the jobs of a broker whose lease lapsed, taken over by the living.
"""
