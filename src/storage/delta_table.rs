//! Delta tables where brook keeps or reads them: a local directory or
//! `s3://bucket/prefix`, opened with the same S3 store as every other
//! path (delta-rs commits each version with a conditional PUT, which S3
//! and SeaweedFS honour).

use std::sync::Arc;

use deltalake::logstore::{ObjectStoreRef, StorageConfig, default_logstore};
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};

use super::{ObjectDir, S3Options};
use crate::error::{BrookError, Result};

/// Opens (without loading) the Delta table at `path`; a local directory
/// is made first when `create`.
pub(crate) async fn open(path: &str, s3: &S3Options, create: bool) -> Result<DeltaTable> {
    let delta_error =
        |err: DeltaTableError| BrookError::external(format!("Delta table {path}"), err.to_string());
    if crate::storage::is_object_url(path) {
        let dir = ObjectDir::open(path, s3)?;
        dir.check().await?;
        let url = url::Url::parse(&dir.url())
            .map_err(|err| BrookError::invalid(format!("'{path}': {err}")))?;
        let root: ObjectStoreRef = Arc::clone(dir.store());
        let config = StorageConfig::default();
        let prefixed: ObjectStoreRef = Arc::from(
            config
                .decorate_store(Arc::clone(&root), &url)
                .map_err(delta_error)?,
        );
        return Ok(DeltaTable::new(default_logstore(
            prefixed, root, &url, &config,
        )));
    }
    if create {
        std::fs::create_dir_all(path)
            .map_err(|err| BrookError::io(format!("cannot create directory {path}"), err))?;
    }
    let absolute = std::fs::canonicalize(path)
        .map_err(|err| BrookError::io(format!("cannot find directory {path}"), err))?;
    let url = url::Url::from_directory_path(&absolute)
        .map_err(|_| BrookError::invalid(format!("'{path}' is not a usable directory")))?;
    DeltaTableBuilder::from_url(url)
        .and_then(|builder| builder.build())
        .map_err(delta_error)
}

/// Loads `table`; false when there is no table there yet.
pub(crate) async fn load(table: &mut DeltaTable, shown: &str) -> Result<bool> {
    match table.load().await {
        Ok(()) => Ok(true),
        Err(DeltaTableError::NotATable(_)) => Ok(false),
        Err(err) => Err(BrookError::external(
            format!("cannot read Delta table {shown}"),
            err.to_string(),
        )),
    }
}
