"""The published dataset: curation, exports, card, index, quotas and per-domain statistics."""
