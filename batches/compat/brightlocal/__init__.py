"""BrightLocal's batch API (v4) as a dialect of batchsite."""
