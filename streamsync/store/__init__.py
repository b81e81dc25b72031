"""The state schema (default `streamsync`): record map, backfill checkpoints, migrations."""
