//! The learned models kept across restarts: saved beside the disk cache (every minute and when
//! the worker ends) and read back at start. A file from an older version loads as far as it
//! goes (see `SequenceModel::restore`); an unreadable one is ignored.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use mcp_edge_policies::prefetch::sequence::Snapshot;

/// The file the models are saved to, in the disk cache's directory.
const MODEL_FILE: &str = "mcp-edge-prefetch.json";

/// Where the models of a proxy whose disk cache is in `disk_path` are kept.
pub(super) fn path_in(disk_path: &Path) -> PathBuf {
    disk_path.join(MODEL_FILE)
}

/// Writes `models` (by route) to `path`, whole or not at all.
pub(super) fn save(path: &Path, models: &HashMap<&str, Snapshot>) {
    let written = serde_json::to_vec(models).map_err(std::io::Error::other).and_then(|bytes| {
        let partial = path.with_extension("json.partial");
        std::fs::write(&partial, bytes)?;
        std::fs::rename(&partial, path)
    });
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "could not save the prefetch models");
    }
}

pub(super) fn load(path: &PathBuf) -> HashMap<String, Snapshot> {
    let Ok(bytes) = std::fs::read(path) else { return HashMap::new() };
    serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable prefetch models");
        HashMap::new()
    })
}
