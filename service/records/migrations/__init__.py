"""Alembic migrations of the records database (``python -m service migrate``)."""
