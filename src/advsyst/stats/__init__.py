"""advsyst.stats."""
