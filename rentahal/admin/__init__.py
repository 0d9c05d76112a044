"""What a sysop can do, one service per concept, each built in `rentahal.broker` with only
the collaborators it uses: the worker catalog (`catalog`), pools and realms (`routing`),
Hugging Face models (`models`), users (`users`), the waiting jobs (`queue`), broadcasts
(`broadcast`), the panel's read-only views (`dashboard`) and the audit trail they all write
to (`audit`).

Authorisation is not checked here; callers gate on the principal's role before calling
(the bus centrally for every sysop message type, REST with a dependency). Every action that
changes something takes the acting user as its first argument (`None`: the broker itself)
and is written to the audit log under them.
"""
