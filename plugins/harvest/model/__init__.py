"""The classifier: models and their runtime, labels and groups, stored scores, the keep decision."""
