"""mtlib."""
