"""advsyst.systematics."""
