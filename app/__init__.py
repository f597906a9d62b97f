"""godmode-store: Redis-backed message storage for a multi-AI chat with God Mode sessions."""
