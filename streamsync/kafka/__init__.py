"""Kafka: topic names (pure), admin for `setup`, client construction."""
