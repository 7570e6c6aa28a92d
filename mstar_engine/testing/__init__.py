"""Test suites a user's own tests can run: the family contract (any Family subclass, plug-ins too)."""
