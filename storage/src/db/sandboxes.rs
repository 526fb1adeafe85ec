//! Rows of the `sandboxes` table.

use rusqlite::{ErrorCode, OptionalExtension, Row, params};

use super::{Database, DbError};

/// A pod sandbox as stored. `config` is the CRI `PodSandboxConfig` encoded by
/// the daemon; `runtime` is the daemon's own state for it (netns path, IPs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxRecord {
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
    pub state: String,
    pub created_at: i64,
    pub runtime_handler: String,
    pub config: Vec<u8>,
    pub runtime: Vec<u8>,
}

const COLUMNS: &str =
    "id, name, namespace, uid, attempt, state, created_at, runtime_handler, config, runtime";

fn from_row(row: &Row<'_>) -> rusqlite::Result<SandboxRecord> {
    Ok(SandboxRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        namespace: row.get(2)?,
        uid: row.get(3)?,
        attempt: row.get(4)?,
        state: row.get(5)?,
        created_at: row.get(6)?,
        runtime_handler: row.get(7)?,
        config: row.get(8)?,
        runtime: row.get(9)?,
    })
}

impl Database {
    /// Stores a new sandbox, reserving its (name, namespace, uid, attempt).
    pub fn insert_sandbox(&self, sandbox: &SandboxRecord) -> Result<(), DbError> {
        let inserted = self.conn.execute(
            &format!(
                "INSERT INTO sandboxes ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
            ),
            params![
                sandbox.id,
                sandbox.name,
                sandbox.namespace,
                sandbox.uid,
                sandbox.attempt,
                sandbox.state,
                sandbox.created_at,
                sandbox.runtime_handler,
                sandbox.config,
                sandbox.runtime,
            ],
        );
        match inserted {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == ErrorCode::ConstraintViolation =>
            {
                if self.sandbox(&sandbox.id)?.is_some() {
                    return Err(DbError::IdTaken {
                        kind: "sandbox",
                        id: sandbox.id.clone(),
                    });
                }
                let holder: String = self.conn.query_row(
                    "SELECT id FROM sandboxes WHERE name = ?1 AND namespace = ?2 AND uid = ?3 AND attempt = ?4",
                    params![sandbox.name, sandbox.namespace, sandbox.uid, sandbox.attempt],
                    |row| row.get(0),
                )?;
                Err(DbError::NameTaken {
                    kind: "sandbox",
                    name: format!(
                        "{}_{}_{}_{}",
                        sandbox.name, sandbox.namespace, sandbox.uid, sandbox.attempt
                    ),
                    holder: format!("sandbox {holder}"),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The sandbox with exactly this id.
    pub fn sandbox(&self, id: &str) -> Result<Option<SandboxRecord>, DbError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM sandboxes WHERE id = ?1"),
                [id],
                from_row,
            )
            .optional()?)
    }

    /// Every sandbox, oldest first.
    pub fn sandboxes(&self) -> Result<Vec<SandboxRecord>, DbError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM sandboxes ORDER BY created_at, id"
        ))?;
        let rows = stmt.query_map([], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many sandboxes are in each state, for metrics.
    pub fn sandbox_states(&self) -> Result<Vec<(String, i64)>, DbError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT state, COUNT(*) FROM sandboxes GROUP BY state")?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records a sandbox's new state.
    pub fn set_sandbox_state(&self, id: &str, state: &str) -> Result<(), DbError> {
        self.update_one(
            "sandbox",
            id,
            "UPDATE sandboxes SET state = ?2 WHERE id = ?1",
            state,
        )
    }

    /// Replaces the daemon's runtime state blob of a sandbox.
    pub fn set_sandbox_runtime(&self, id: &str, runtime: &[u8]) -> Result<(), DbError> {
        self.update_one(
            "sandbox",
            id,
            "UPDATE sandboxes SET runtime = ?2 WHERE id = ?1",
            runtime,
        )
    }

    /// Removes a sandbox and the rows of its containers. Returns whether it existed.
    pub fn delete_sandbox(&mut self, id: &str) -> Result<bool, DbError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM containers WHERE sandbox_id = ?1", [id])?;
        let removed = tx.execute("DELETE FROM sandboxes WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(removed > 0)
    }

    /// Runs an UPDATE that must touch exactly the row `id` of table `kind`.
    pub(super) fn update_one(
        &self,
        kind: &'static str,
        id: &str,
        sql: &str,
        value: impl rusqlite::ToSql,
    ) -> Result<(), DbError> {
        match self.conn.execute(sql, params![id, value])? {
            0 => Err(DbError::NotFound {
                kind,
                id: id.to_owned(),
            }),
            _ => Ok(()),
        }
    }
}
