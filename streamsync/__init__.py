"""streamsync: PostgreSQL logical replication -> Kafka -> Zoho CRM, with a Bulk Write backfill."""

__version__ = "0.1.0"
__all__ = ["__version__"]
