"""Scenario files: schema, loader, validation errors with FILE:LINE."""
from .loader import ScenarioError, discover, load
from .model import Entry, Op, Scenario

__all__ = ["Entry", "Op", "Scenario", "ScenarioError", "discover", "load"]
