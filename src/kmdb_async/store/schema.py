"""Table names and DDL (SPEC section 2). Every table name is defined here once.

km-db's tables keep their names and meaning. Extra columns: ``origin_user_id`` on events and
properties (the user row of the record's own ``_p``, so rows can be re-pointed when a group's
canonical identity changes). Extra tables: ``kmdb_revisions`` (the revision cursor when Redis
is not used), ``kmdb_runs`` (one summary per import run) and ``kmdb_late_links`` (identities
whose groups an unfinished first import re-points once its indexes exist, see
store/firstimport.py).
"""

from __future__ import annotations

KEYS = "keys"
USERS = "users"
EVENTS = "events"
PROPERTIES = "properties"
ALIASES = "aliases"
IGNORED_USERS = "ignored_users"
WHITELISTED_EVENTS = "whitelisted_events"
BLACKLISTED_PROPERTIES = "blacklisted_properties"
REVISIONS = "kmdb_revisions"
RUNS = "kmdb_runs"
LATE_LINKS = "kmdb_late_links"

FILTER_TABLES = (IGNORED_USERS, WHITELISTED_EVENTS, BLACKLISTED_PROPERTIES)
#: Tables emptied by ``kmdb-async flush`` (the filter tables are the user's and stay).
DATA_TABLES = (EVENTS, PROPERTIES, ALIASES, USERS, KEYS, REVISIONS, RUNS, LATE_LINKS)

MAX_NAME = 255  # characters of a key, event name, identity or filter name
NAME = f"VARCHAR({MAX_NAME}) NOT NULL"
ALIAS_PAIR_INDEX = "index_aliases_on_name1_and_name2"

#: The secondary indexes of the row tables, name -> columns. A first import larger than one
#: slice loads these tables with their primary key only and builds them at its end (see
#: store/firstimport.py).
ROW_INDEXES = {
    EVENTS: {
        "index_events_on_t": "`t`",
        "index_events_on_n_and_t": "`n`, `t`",
        "index_events_on_user_id_and_t": "`user_id`, `t`",
    },
    PROPERTIES: {
        "index_properties_on_event_id": "`event_id`",
        "index_properties_on_key_and_t": "`key`, `t`",
        "index_properties_on_user_id_and_key": "`user_id`, `key`",
    },
}


def index_clauses(table: str) -> list[str]:
    """``KEY `name` (columns)`` for each of ``table``'s ROW_INDEXES."""
    return [f"KEY `{name}` ({columns})" for name, columns in ROW_INDEXES[table].items()]

#: Tables that ``kmdb-async partition`` partitions by RANGE COLUMNS on this column (MySQL only).
PARTITIONED_TABLES = (EVENTS, PROPERTIES, ALIASES)
PARTITION_COLUMN = "t"
#: Key changes made with the partitioning: MySQL requires every unique key (the primary key
#: included) to contain the partitioning column. A line's ``t`` never changes, so (id, t) is
#: as unique as id; the alias pair stays unique through MySQLStore.write_links' locking.
PARTITION_KEYS = {
    EVENTS: "DROP PRIMARY KEY, ADD PRIMARY KEY (`id`, `t`)",
    PROPERTIES: "DROP PRIMARY KEY, ADD PRIMARY KEY (`id`, `t`)",
    ALIASES: f"DROP PRIMARY KEY, ADD PRIMARY KEY (`id`, `t`), DROP INDEX `{ALIAS_PAIR_INDEX}`, "
    f"ADD KEY `{ALIAS_PAIR_INDEX}` (`name1`, `name2`)",
}


def ddl(binary_collation: str) -> list[str]:
    """CREATE TABLE statements; ``binary_collation`` compares exactly (binary, no pad)."""
    table = f"ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={binary_collation}"
    return [
        f"""CREATE TABLE IF NOT EXISTS `{KEYS}` (
            `id` INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
            `string` {NAME},
            UNIQUE KEY `index_keys_on_string` (`string`)
        ) {table}""",
        f"""CREATE TABLE IF NOT EXISTS `{USERS}` (
            `id` BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
            `name` {NAME},
            UNIQUE KEY `index_users_on_name` (`name`)
        ) {table}""",
        f"""CREATE TABLE IF NOT EXISTS `{EVENTS}` (
            `id` BIGINT UNSIGNED NOT NULL PRIMARY KEY,
            `t` DATETIME NOT NULL,
            `n` INT UNSIGNED NOT NULL,
            `user_id` BIGINT UNSIGNED NOT NULL,
            `origin_user_id` BIGINT UNSIGNED NOT NULL,
            {", ".join(index_clauses(EVENTS))}
        ) {table}""",
        f"""CREATE TABLE IF NOT EXISTS `{PROPERTIES}` (
            `id` BIGINT UNSIGNED NOT NULL PRIMARY KEY,
            `t` DATETIME NOT NULL,
            `user_id` BIGINT UNSIGNED NOT NULL,
            `origin_user_id` BIGINT UNSIGNED NOT NULL,
            `event_id` BIGINT UNSIGNED NULL,
            `key` INT UNSIGNED NOT NULL,
            `value` MEDIUMTEXT NULL,
            {", ".join(index_clauses(PROPERTIES))}
        ) {table}""",
        f"""CREATE TABLE IF NOT EXISTS `{ALIASES}` (
            `id` BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
            `name1` {NAME},
            `name2` {NAME},
            `t` DATETIME NOT NULL,
            UNIQUE KEY `{ALIAS_PAIR_INDEX}` (`name1`, `name2`),
            KEY `index_aliases_on_name2` (`name2`)
        ) {table}""",
        *(
            f"CREATE TABLE IF NOT EXISTS `{name}` (`name` {NAME} PRIMARY KEY) {table}"
            for name in (*FILTER_TABLES, LATE_LINKS)
        ),
        f"""CREATE TABLE IF NOT EXISTS `{REVISIONS}` (
            `revision` INT UNSIGNED NOT NULL PRIMARY KEY,
            `offset` BIGINT UNSIGNED NOT NULL,
            `updated_at` TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP
        ) {table}""",
        f"""CREATE TABLE IF NOT EXISTS `{RUNS}` (
            `id` BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
            `started_at` DATETIME NOT NULL,
            `finished_at` DATETIME NOT NULL,
            `status` VARCHAR(32) NOT NULL,
            `summary` TEXT NOT NULL
        ) {table}""",
    ]
