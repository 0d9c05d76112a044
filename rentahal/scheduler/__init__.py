"""The scheduler: job lifecycle, queue and dispatch to worker slots."""

from rentahal.scheduler.scheduler import Scheduler

__all__ = ["Scheduler"]
