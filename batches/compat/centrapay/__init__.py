"""Centrapay's batch API as a dialect of batchsite."""
