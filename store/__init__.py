"""The orchestrator's database: the Store contract (`store.base`), its two implementations over the
same SQL functions (`store.postgres`, `store.supabase`, both on `store.rpc`), the migrations
(`store.migrate`, `store/migrations/*.sql`), the embedded Postgres (`store.embedded`) and the
factory that picks one from the settings (`store.factory.open_store`).

Nothing is imported here, so importing `store.base` stays light.
"""
