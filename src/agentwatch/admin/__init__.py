"""The admin REST API under `/api`."""
