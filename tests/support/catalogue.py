"""A schema's catalogue as plain rows, to show that a migration left it exactly as it was."""

from __future__ import annotations

from typing import Any

import psycopg

# Every kind of object an app's schema holds, with what defines it (and who may use it).
_QUERIES = {
    "relations": """
        SELECT c.relname, c.relkind::text, c.relacl::text, c.relrowsecurity, c.reloptions::text
        FROM pg_class c WHERE c.relnamespace = %(ns)s::regnamespace ORDER BY 1""",
    "columns": """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), a.attacl::text
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace = %(ns)s::regnamespace AND a.attnum > 0 AND NOT a.attisdropped ORDER BY 1, 2""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = %(ns)s::regnamespace ORDER BY 1, 2""",
    "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %(ns)s ORDER BY 1",
    "functions": """
        SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid), p.proacl::text, p.proconfig::text
        FROM pg_proc p WHERE p.pronamespace = %(ns)s::regnamespace ORDER BY 1""",
    "triggers": """
        SELECT t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE c.relnamespace = %(ns)s::regnamespace AND NOT t.tgisinternal ORDER BY 1""",
    "policies": """
        SELECT tablename, policyname, permissive, roles::text, cmd, qual, with_check
        FROM pg_policies WHERE schemaname = %(ns)s ORDER BY 1, 2""",
    "types": """
        SELECT t.typname, t.typtype::text, array(SELECT e.enumlabel FROM pg_enum e WHERE e.enumtypid = t.oid
                                                 ORDER BY e.enumsortorder)::text
        FROM pg_type t WHERE t.typnamespace = %(ns)s::regnamespace ORDER BY 1""",
    "schema": "SELECT nspname, nspacl::text FROM pg_namespace WHERE nspname = %(ns)s",
}


def catalogue(conninfo: str, schema: str = "public") -> dict[str, list[tuple[Any, ...]]]:
    """Every table, column, constraint, index, function, trigger, policy and type of `schema`."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return {kind: conn.execute(query.encode(), {"ns": schema}).fetchall() for kind, query in _QUERIES.items()}
