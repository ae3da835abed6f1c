"""What the service remembers: every answer it gave, and what readers said about it.

A prediction log (:mod:`service.records.log`) and readers' reviews
(:mod:`service.records.reviews`) in one database (:mod:`service.records.db`): SQLite in
the records folder by default, PostgreSQL when ``BONEFRAC_DATABASE_URL`` names one. No
patient data is ever stored; images only when ``BONEFRAC_STORE_IMAGES=true``.

Importing this package does no work and pulls in neither FastAPI nor the model: the
trainer's ``export-reviewed`` reads the same database through :mod:`service.records.db`
and :mod:`service.records.tables` alone.
"""
