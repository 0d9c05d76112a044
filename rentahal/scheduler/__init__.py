"""The scheduler: job lifecycle (`scheduler`), the fair queue (`fair_queue`) and the steps a
query goes through (`stages`)."""
