"""Usage metering: the ledger writer and its queries."""
