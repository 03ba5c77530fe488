"""Routers under test other than the reference router (Kamailio from Debian)."""
