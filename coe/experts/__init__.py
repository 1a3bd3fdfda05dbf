"""Expert clients, their wrappers, the servers that host them and the pool that owns them."""
