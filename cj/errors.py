"""Errors shared by the cj modules."""


class GradingError(ValueError):
    """Anchors or a scale that cannot give grades (unknown grade, too few anchors, ...)."""
