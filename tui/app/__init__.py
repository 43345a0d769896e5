"""Everything Textual lives here (and only here)."""
