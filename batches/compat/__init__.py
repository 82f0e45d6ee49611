"""Dialects: the source APIs' own paths and shapes, translated onto batchsite's services."""
