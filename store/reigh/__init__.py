"""The Reigh app's database as a fixture: `app_fixture.sql` (schema and functions) and `fixture.py` (helpers)."""
