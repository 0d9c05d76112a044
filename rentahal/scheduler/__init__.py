"""The scheduler: accepting, queueing and dispatching (`scheduler`), the job and its phases
(`jobs`), one job's life on a worker (`runner`), its charge and earnings (`billing`), and the
in-process job queue (`queues` over `fair_queue`) and worker slots (`slots`)."""
