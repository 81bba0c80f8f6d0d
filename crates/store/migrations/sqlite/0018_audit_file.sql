-- SQLite only: the audit log moves to a file of its own (see src/audit_file.rs), which the store does in
-- code after the migrations, since a migration cannot name that file. This row names the log file that
-- belongs to this database.
CREATE TABLE audit_file (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    log_id TEXT NOT NULL
);
