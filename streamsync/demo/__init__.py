"""The embedded-default demo: generated orders, a live writer, the end-to-end run."""
