//! Rows of the `images`, `image_names`, `layers` and `image_layers` tables.
//! A layer's reference count is never stored: it is the number of images
//! whose `image_layers` rows name it.

use rusqlite::{OptionalExtension, Row, params};

use super::{Database, DbError};

/// A pulled image. `id` is the config digest; `names` are its repo tags and
/// repo digests; `layers` its chain ids, bottom first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageRecord {
    pub id: String,
    pub manifest_digest: String,
    pub size: u64,
    pub config: Vec<u8>,
    pub pinned: bool,
    pub created_at: i64,
    pub names: Vec<String>,
    pub layers: Vec<String>,
}

/// One unpacked layer, shared by every image whose chain includes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRecord {
    pub chain_id: String,
    pub diff_id: String,
    /// Chain id of the layer below, empty for a base layer.
    pub parent: String,
    pub size: u64,
}

const IMAGE_COLUMNS: &str = "id, manifest_digest, size, config, pinned, created_at";

fn image_from_row(row: &Row<'_>) -> rusqlite::Result<ImageRecord> {
    Ok(ImageRecord {
        id: row.get(0)?,
        manifest_digest: row.get(1)?,
        size: row.get::<_, i64>(2)? as u64,
        config: row.get(3)?,
        pinned: row.get(4)?,
        created_at: row.get(5)?,
        names: Vec::new(),
        layers: Vec::new(),
    })
}

impl Database {
    /// Records an unpacked layer; a layer already recorded is left as it is.
    pub fn insert_layer(&self, layer: &LayerRecord) -> Result<(), DbError> {
        self.conn.execute(
            "INSERT OR IGNORE INTO layers (chain_id, diff_id, parent, size) VALUES (?1, ?2, ?3, ?4)",
            params![layer.chain_id, layer.diff_id, layer.parent, layer.size as i64],
        )?;
        Ok(())
    }

    /// The layer with this chain id.
    pub fn layer(&self, chain_id: &str) -> Result<Option<LayerRecord>, DbError> {
        Ok(self
            .conn
            .query_row(
                "SELECT chain_id, diff_id, parent, size FROM layers WHERE chain_id = ?1",
                [chain_id],
                |row| {
                    Ok(LayerRecord {
                        chain_id: row.get(0)?,
                        diff_id: row.get(1)?,
                        parent: row.get(2)?,
                        size: row.get::<_, i64>(3)? as u64,
                    })
                },
            )
            .optional()?)
    }

    /// Stores an image whose layers are already recorded, in one transaction.
    /// Names it carries move to it from whichever image held them before, as
    /// a re-pulled tag does.
    pub fn insert_image(&mut self, image: &ImageRecord) -> Result<(), DbError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            &format!(
                "INSERT INTO images ({IMAGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT(id) DO UPDATE SET manifest_digest = excluded.manifest_digest, \
                 size = excluded.size, config = excluded.config, pinned = excluded.pinned"
            ),
            params![
                image.id,
                image.manifest_digest,
                image.size as i64,
                image.config,
                image.pinned,
                image.created_at,
            ],
        )?;
        tx.execute("DELETE FROM image_layers WHERE image_id = ?1", [&image.id])?;
        for (position, chain_id) in image.layers.iter().enumerate() {
            tx.execute(
                "INSERT INTO image_layers (image_id, position, chain_id) VALUES (?1, ?2, ?3)",
                params![image.id, position as i64, chain_id],
            )?;
        }
        for name in &image.names {
            tx.execute(
                "INSERT INTO image_names (name, image_id) VALUES (?1, ?2) \
                 ON CONFLICT(name) DO UPDATE SET image_id = excluded.image_id",
                params![name, image.id],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The image with exactly this id, with its names and layers.
    pub fn image(&self, id: &str) -> Result<Option<ImageRecord>, DbError> {
        let image = self
            .conn
            .query_row(
                &format!("SELECT {IMAGE_COLUMNS} FROM images WHERE id = ?1"),
                [id],
                image_from_row,
            )
            .optional()?;
        image
            .map(|image| self.with_names_and_layers(image))
            .transpose()
    }

    /// The image a repo tag or repo digest points to.
    pub fn image_by_name(&self, name: &str) -> Result<Option<ImageRecord>, DbError> {
        let id: Option<String> = self
            .conn
            .query_row(
                "SELECT image_id FROM image_names WHERE name = ?1",
                [name],
                |row| row.get(0),
            )
            .optional()?;
        match id {
            Some(id) => self.image(&id),
            None => Ok(None),
        }
    }

    /// Every image, oldest first.
    pub fn images(&self) -> Result<Vec<ImageRecord>, DbError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {IMAGE_COLUMNS} FROM images ORDER BY created_at, id"
        ))?;
        let images = stmt
            .query_map([], image_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        images
            .into_iter()
            .map(|image| self.with_names_and_layers(image))
            .collect()
    }

    /// Removes an image and returns the chain ids of the layers no other image
    /// uses any more; their rows are gone, their directories are the caller's
    /// to remove. Returns `None` when the image did not exist.
    pub fn delete_image(&mut self, id: &str) -> Result<Option<Vec<String>>, DbError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let layers: Vec<String> = {
            let mut stmt = tx.prepare("SELECT chain_id FROM image_layers WHERE image_id = ?1")?;
            stmt.query_map([id], |row| row.get(0))?
                .collect::<Result<_, _>>()?
        };
        if tx.execute("DELETE FROM images WHERE id = ?1", [id])? == 0 {
            return Ok(None);
        }
        let mut orphaned = Vec::new();
        for chain_id in layers {
            let users: i64 = tx.query_row(
                "SELECT COUNT(*) FROM image_layers WHERE chain_id = ?1",
                [&chain_id],
                |row| row.get(0),
            )?;
            if users == 0 && tx.execute("DELETE FROM layers WHERE chain_id = ?1", [&chain_id])? > 0
            {
                orphaned.push(chain_id);
            }
        }
        tx.commit()?;
        Ok(Some(orphaned))
    }

    fn with_names_and_layers(&self, mut image: ImageRecord) -> Result<ImageRecord, DbError> {
        let mut names = self
            .conn
            .prepare_cached("SELECT name FROM image_names WHERE image_id = ?1 ORDER BY name")?;
        image.names = names
            .query_map([&image.id], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        let mut layers = self.conn.prepare_cached(
            "SELECT chain_id FROM image_layers WHERE image_id = ?1 ORDER BY position",
        )?;
        image.layers = layers
            .query_map([&image.id], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(image)
    }
}

/// Bookkeeping the image store needs beyond single rows.
impl Database {
    /// Every recorded layer.
    pub fn layers(&self) -> Result<Vec<LayerRecord>, DbError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT chain_id, diff_id, parent, size FROM layers")?;
        let rows = stmt.query_map([], |row| {
            Ok(LayerRecord {
                chain_id: row.get(0)?,
                diff_id: row.get(1)?,
                parent: row.get(2)?,
                size: row.get::<_, i64>(3)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Removes a layer row that no image uses. Returns whether it was removed;
    /// a layer some image uses stays.
    pub fn delete_unused_layer(&self, chain_id: &str) -> Result<bool, DbError> {
        Ok(self.conn.execute(
            "DELETE FROM layers WHERE chain_id = ?1 AND NOT EXISTS \
             (SELECT 1 FROM image_layers WHERE chain_id = ?1)",
            [chain_id],
        )? > 0)
    }

    /// Whether some image uses this layer.
    pub fn layer_in_use(&self, chain_id: &str) -> Result<bool, DbError> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM image_layers WHERE chain_id = ?1)",
            [chain_id],
            |row| row.get(0),
        )?)
    }

    /// Ids of the containers created from this image or mounting it as a
    /// volume.
    pub fn containers_using_image(&self, image_id: &str) -> Result<Vec<String>, DbError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id FROM containers WHERE image_id = ?1 \
             UNION SELECT container_id FROM image_volumes WHERE image_id = ?1 ORDER BY 1",
        )?;
        let rows = stmt.query_map([image_id], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records that container `container_id` mounts image `image_id` as a
    /// volume; the row goes with the container's.
    pub fn insert_image_volume(&self, container_id: &str, image_id: &str) -> Result<(), DbError> {
        self.conn.execute(
            "INSERT OR IGNORE INTO image_volumes (container_id, image_id) VALUES (?1, ?2)",
            [container_id, image_id],
        )?;
        Ok(())
    }

    /// Whether a container with this id exists.
    pub fn container_exists(&self, id: &str) -> Result<bool, DbError> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM containers WHERE id = ?1)",
            [id],
            |row| row.get(0),
        )?)
    }
}
