"""Where results go: SQL tables (SQLite embedded, Postgres in production) and Kafka."""
