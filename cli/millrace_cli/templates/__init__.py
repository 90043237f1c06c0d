"""What ``millrace init`` writes: a feature module of your own, its settings, a test."""
