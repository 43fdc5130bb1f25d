"""advsyst.models."""
