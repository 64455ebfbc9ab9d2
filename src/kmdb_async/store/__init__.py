"""The database: schema (table names, DDL) and the MariaDB/MySQL store."""
