//! Rows of the `containers` table.

use rusqlite::{ErrorCode, OptionalExtension, Row, params};

use super::{Database, DbError};

/// A container as stored. `config` is the CRI `ContainerConfig` encoded by the
/// daemon; `runtime` is the daemon's own state (monitor identity, paths).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub attempt: u32,
    pub image_id: String,
    pub state: String,
    /// Nanoseconds since the Unix epoch; 0 when not reached yet.
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub config: Vec<u8>,
    pub runtime: Vec<u8>,
}

/// What changes when a container starts or finishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerProgress {
    pub state: String,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
}

const COLUMNS: &str = "id, sandbox_id, name, attempt, image_id, state, created_at, started_at, \
                       finished_at, exit_code, reason, message, config, runtime";

fn from_row(row: &Row<'_>) -> rusqlite::Result<ContainerRecord> {
    Ok(ContainerRecord {
        id: row.get(0)?,
        sandbox_id: row.get(1)?,
        name: row.get(2)?,
        attempt: row.get(3)?,
        image_id: row.get(4)?,
        state: row.get(5)?,
        created_at: row.get(6)?,
        started_at: row.get(7)?,
        finished_at: row.get(8)?,
        exit_code: row.get(9)?,
        reason: row.get(10)?,
        message: row.get(11)?,
        config: row.get(12)?,
        runtime: row.get(13)?,
    })
}

impl Database {
    /// Stores a new container, reserving (sandbox, name, attempt).
    pub fn insert_container(&self, c: &ContainerRecord) -> Result<(), DbError> {
        let inserted = self.conn.execute(
            &format!(
                "INSERT INTO containers ({COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
            ),
            params![
                c.id,
                c.sandbox_id,
                c.name,
                c.attempt,
                c.image_id,
                c.state,
                c.created_at,
                c.started_at,
                c.finished_at,
                c.exit_code,
                c.reason,
                c.message,
                c.config,
                c.runtime,
            ],
        );
        match inserted {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == ErrorCode::ConstraintViolation =>
            {
                if self.container(&c.id)?.is_some() {
                    return Err(DbError::IdTaken {
                        kind: "container",
                        id: c.id.clone(),
                    });
                }
                let holder: Option<String> = self
                    .conn
                    .query_row(
                        "SELECT id FROM containers WHERE sandbox_id = ?1 AND name = ?2 AND attempt = ?3",
                        params![c.sandbox_id, c.name, c.attempt],
                        |row| row.get(0),
                    )
                    .optional()?;
                match holder {
                    Some(holder) => Err(DbError::NameTaken {
                        kind: "container",
                        name: format!("{}_{}", c.name, c.attempt),
                        holder: format!("container {holder} in sandbox {}", c.sandbox_id),
                    }),
                    // The only other constraint is the sandbox reference.
                    None => Err(DbError::NotFound {
                        kind: "sandbox",
                        id: c.sandbox_id.clone(),
                    }),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The container with exactly this id.
    pub fn container(&self, id: &str) -> Result<Option<ContainerRecord>, DbError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM containers WHERE id = ?1"),
                [id],
                from_row,
            )
            .optional()?)
    }

    /// Every container, oldest first.
    pub fn containers(&self) -> Result<Vec<ContainerRecord>, DbError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM containers ORDER BY created_at, id"
        ))?;
        let rows = stmt.query_map([], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many containers are in each state, for metrics.
    pub fn container_states(&self) -> Result<Vec<(String, i64)>, DbError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT state, COUNT(*) FROM containers GROUP BY state")?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The containers of one sandbox, oldest first.
    pub fn containers_in_sandbox(&self, sandbox_id: &str) -> Result<Vec<ContainerRecord>, DbError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM containers WHERE sandbox_id = ?1 ORDER BY created_at, id"
        ))?;
        let rows = stmt.query_map([sandbox_id], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records a container starting, exiting or being stopped.
    pub fn set_container_progress(&self, id: &str, p: &ContainerProgress) -> Result<(), DbError> {
        let changed = self.conn.execute(
            "UPDATE containers SET state = ?2, started_at = ?3, finished_at = ?4, exit_code = ?5, \
             reason = ?6, message = ?7 WHERE id = ?1",
            params![
                id,
                p.state,
                p.started_at,
                p.finished_at,
                p.exit_code,
                p.reason,
                p.message
            ],
        )?;
        match changed {
            0 => Err(DbError::NotFound {
                kind: "container",
                id: id.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// Replaces the daemon's runtime state blob of a container.
    pub fn set_container_runtime(&self, id: &str, runtime: &[u8]) -> Result<(), DbError> {
        self.update_one(
            "container",
            id,
            "UPDATE containers SET runtime = ?2 WHERE id = ?1",
            runtime,
        )
    }

    /// Replaces the stored CRI config of a container (its resources change
    /// with UpdateContainerResources, and ContainerStatus reports them).
    pub fn set_container_config(&self, id: &str, config: &[u8]) -> Result<(), DbError> {
        self.update_one(
            "container",
            id,
            "UPDATE containers SET config = ?2 WHERE id = ?1",
            config,
        )
    }

    /// Removes a container row. Returns whether it existed.
    pub fn delete_container(&self, id: &str) -> Result<bool, DbError> {
        Ok(self
            .conn
            .execute("DELETE FROM containers WHERE id = ?1", [id])?
            > 0)
    }
}
