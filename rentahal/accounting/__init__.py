"""Accounting: what a query costs, and what a worker's owner earns for it."""

from rentahal.accounting.cost import QueryCost, owner_earning, query_cost

__all__ = ["QueryCost", "owner_earning", "query_cost"]
