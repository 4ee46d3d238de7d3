"""Integrations with other training frameworks (optional extras): :mod:`.lightning`."""
