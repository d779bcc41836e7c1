"""Spend controls on the hot path: which limits and budgets apply to a call, admitting it
against them before it goes upstream and settling it after."""
