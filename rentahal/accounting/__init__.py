"""Accounting: what a query costs."""

from rentahal.accounting.cost import QueryCost, query_cost

__all__ = ["QueryCost", "query_cost"]
