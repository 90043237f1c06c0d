"""The model registry service: versions, artifacts, aliases, rollback, notifications."""
