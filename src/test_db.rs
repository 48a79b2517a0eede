//! Tests only: an in-memory SQLite database with every D1 migration applied
//! in order, so SQL is tested against the real schema.

pub fn migrated() -> rusqlite::Connection {
    let db = rusqlite::Connection::open_in_memory().unwrap();
    let mut files: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in &files {
        db.execute_batch(&std::fs::read_to_string(f).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
    db
}

/// Writes ledger rows through the statements the Worker sends D1
/// (`ledger::ledger_statements`), in one transaction like a D1 batch.
pub fn write_rows(db: &rusqlite::Connection, rows: &[crate::ledger::RequestRow]) {
    db.execute_batch("BEGIN").unwrap();
    for (sql, json) in crate::ledger::ledger_statements(rows) {
        db.execute(sql, [json])
            .unwrap_or_else(|e| panic!("{e}: {sql}"));
    }
    db.execute_batch("COMMIT").unwrap();
}
