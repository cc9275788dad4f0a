//! Claims on shared work by lock files, so that several processes — Slurm
//! array tasks on a shared filesystem, or two processes on one machine —
//! fill one sweep folder without computing a cell twice.
//!
//! A claim is the file `NAME.lock`, created with `create_new` (atomic on
//! local filesystems and on NFS v3 and later) and holding `host pid`; it is
//! removed when the claim is dropped. A lock left by a process that died on
//! this host (its pid no longer runs) is stale and taken over; one from
//! another host is respected until someone deletes it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

/// A held claim; dropping it releases the lock.
#[derive(Debug)]
pub struct Claim {
    path: PathBuf,
}

impl Claim {
    /// Claims `lock` (a path ending in `.lock`), or `None` when another live
    /// process holds it.
    pub fn try_new(lock: &Path) -> Result<Option<Claim>> {
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(lock)
            {
                Ok(mut f) => {
                    writeln!(f, "{} {}", host(), std::process::id())
                        .with_context(|| format!("cannot write {}", lock.display()))?;
                    return Ok(Some(Claim {
                        path: lock.to_path_buf(),
                    }));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if !is_stale(lock) {
                        return Ok(None);
                    }
                    // The holder died: take the claim over (once).
                    let _ = std::fs::remove_file(lock);
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create {}", lock.display()))
                }
            }
        }
        Ok(None)
    }

    /// Claims `lock`, waiting (polling every second) while another live
    /// process holds it; `waiting` is called once when it has to wait.
    pub fn wait(lock: &Path, mut waiting: impl FnMut()) -> Result<Claim> {
        let mut said = false;
        loop {
            if let Some(claim) = Claim::try_new(lock)? {
                return Ok(claim);
            }
            if !said {
                waiting();
                said = true;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// This machine's host name (`localhost` when it cannot be read).
fn host() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer outlives the call and its length is passed.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Whether the lock was left by a process of this host that no longer runs.
fn is_stale(lock: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(lock) else {
        return false;
    };
    let mut parts = text.split_whitespace();
    let (Some(h), Some(pid)) = (
        parts.next(),
        parts.next().and_then(|p| p.parse::<i32>().ok()),
    ) else {
        return false;
    };
    if h != host() || pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    !alive
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_claim_at_a_time_and_stale_locks_are_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("cell.lock");
        let first = Claim::try_new(&lock).unwrap().expect("free");
        assert!(
            Claim::try_new(&lock).unwrap().is_none(),
            "held by a live process"
        );
        drop(first);
        assert!(!lock.exists());
        // a lock of a dead process on this host (pid beyond the kernel's range)
        std::fs::write(&lock, format!("{} 2147483646\n", host())).unwrap();
        assert!(
            Claim::try_new(&lock).unwrap().is_some(),
            "stale lock taken over"
        );
        // one of another host is respected
        std::fs::write(&lock, "some-other-host 1\n").unwrap();
        assert!(Claim::try_new(&lock).unwrap().is_none());
    }
}
