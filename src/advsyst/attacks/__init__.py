"""advsyst.attacks."""
