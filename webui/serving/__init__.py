"""Serving many users safely: accounts, callers (who asks), and the request guards."""
