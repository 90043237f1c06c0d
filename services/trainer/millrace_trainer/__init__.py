"""The trainer service: baseline by backfill, then mini-batches from the stream."""
