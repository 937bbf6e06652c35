"""Runnable examples of services that use Userkeep."""
