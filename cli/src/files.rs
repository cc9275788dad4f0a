//! Files written whole or not at all.

use std::io::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Writes `contents` to `path` (creating its parent folder) through a
/// temporary file, flushed to disk, and a rename, so that a crash leaves
/// either the old file or the new one, never a half-written one.
pub fn write_atomic(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
    }
    // One temporary name per process: workers sharing a folder may write
    // the same file at once, and must not rename each other's.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(contents.as_ref())?;
        f.sync_all()
    };
    write().with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move {} into place", path.display()))
}

/// Checks, before any work, that a file can be written at `path`: it is not
/// a folder, and the nearest existing folder above it is a folder (not a
/// regular file standing where a folder would be created).
pub fn check_out_file(path: &Path) -> Result<()> {
    if path.is_dir() {
        bail!(
            "{} is a folder; --out takes a file name here",
            path.display()
        );
    }
    check_parents(path)
}

/// Checks, before any work, that a folder can be written at `path`: it is
/// not a regular file, nor inside one.
pub fn check_out_dir(path: &Path) -> Result<()> {
    if path.exists() && !path.is_dir() {
        bail!("{} is a file; --out takes a folder here", path.display());
    }
    check_parents(path)
}

fn check_parents(path: &Path) -> Result<()> {
    for above in path.ancestors().skip(1) {
        if above.as_os_str().is_empty() {
            break;
        }
        if above.exists() {
            if !above.is_dir() {
                bail!(
                    "{} is a file, so {} cannot be created inside it",
                    above.display(),
                    path.display()
                );
            }
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_inside_files_or_over_folders_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let inside = file.join("sub").join("x.safetensors");
        let err = check_out_file(&inside).unwrap_err().to_string();
        assert!(err.contains("a-file is a file"), "{err}");
        assert!(check_out_dir(&inside).is_err());
        let err = check_out_file(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is a folder"), "{err}");
        let err = check_out_dir(&file).unwrap_err().to_string();
        assert!(err.contains("is a file; --out takes a folder"), "{err}");
        // new files and folders below existing folders are fine
        check_out_file(&dir.path().join("new").join("x.safetensors")).unwrap();
        check_out_dir(&dir.path().join("new")).unwrap();
        check_out_file(Path::new("relative.safetensors")).unwrap();
    }
}

/// The message of `error` and its causes, joined by `: ` as `{:#}` does,
/// with a cause left out when the text before it already ends with it
/// (library errors that show their source, such as `I/O error on X: Is a
/// directory`, would otherwise print it twice).
pub fn error_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if text.ends_with(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

#[cfg(test)]
mod error_tests {
    use super::*;

    #[test]
    fn a_cause_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::IsADirectory, "Is a directory");
        let model = kdprune_models::ModelError::Io {
            path: "/tmp".into(),
            source: io,
        };
        let err = anyhow::Error::new(model).context("cannot load checkpoint /tmp");
        assert_eq!(
            format!("{err:#}"),
            "cannot load checkpoint /tmp: I/O error on /tmp: Is a directory: Is a directory"
        );
        assert_eq!(
            error_text(&err),
            "cannot load checkpoint /tmp: I/O error on /tmp: Is a directory"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_text(&plain), "outer: inner");
    }
}
