//! Files an action writes: a temporary file beside the destination (same file system, so the
//! final `rename` is atomic), synced to disk, with the destination's permissions.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::ActionError;

/// Whether `path` holds exactly `content`.
pub fn is_same(path: &Path, content: &[u8]) -> bool {
    std::fs::read(path).is_ok_and(|live| live == content)
}

/// The temporary path beside `destination`: `.<name>.lathe-agent.tmp`.
pub fn temp_path(destination: &Path) -> PathBuf {
    let name = destination
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".to_string());
    destination.with_file_name(format!(".{name}.lathe-agent.tmp"))
}

/// Writes `content` to the temporary file of `destination` (created with the destination's
/// permissions when it exists) and syncs it; returns its path.
pub fn write_temp(destination: &Path, content: &[u8]) -> Result<PathBuf, ActionError> {
    let temp = temp_path(destination);
    if let Some(dir) = destination.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| ActionError::File {
            doing: "create",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let write_error = |source| ActionError::File {
        doing: "write",
        path: temp.clone(),
        source,
    };
    let mut file = std::fs::File::create(&temp).map_err(write_error)?;
    file.write_all(content)
        .and_then(|()| file.sync_all())
        .map_err(write_error)?;
    if let Ok(meta) = std::fs::metadata(destination) {
        let _ = std::fs::set_permissions(&temp, meta.permissions());
    }
    Ok(temp)
}

/// Moves the checked temporary file over the destination.
pub fn commit(temp: &Path, destination: &Path) -> Result<(), ActionError> {
    std::fs::rename(temp, destination).map_err(|source| ActionError::Rename {
        from: temp.to_path_buf(),
        to: destination.to_path_buf(),
        source,
    })
}

/// Removes a temporary file that was not committed.
pub fn discard(temp: &Path) {
    let _ = std::fs::remove_file(temp);
}

/// Writes `content` to `destination` atomically (temporary file + rename).
pub fn write_atomic(destination: &Path, content: &[u8]) -> Result<(), ActionError> {
    let temp = write_temp(destination, content)?;
    commit(&temp, destination).inspect_err(|_| discard(&temp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub/out.cfg");
        write_atomic(&file, b"one").unwrap();
        assert!(is_same(&file, b"one"));
        write_atomic(&file, b"two").unwrap();
        assert!(is_same(&file, b"two") && !is_same(&file, b"one"));
        assert!(!temp_path(&file).exists());
    }
}
