"""siplab."""
