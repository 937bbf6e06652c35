"""Userkeep: self-hosted user management on one PostgreSQL user store."""
