//! A full disk: writes fail with a clear error, nothing acknowledged is lost, and writing
//! resumes once there is space again. Uses a small tmpfs, so it needs root.

use std::path::{Path, PathBuf};
use std::process::Command;

use kapal_store::sqlite::SqliteStore;
use kapal_store::{Store, StoreError};

/// A mounted tmpfs; unmounted (then its directory removed) on drop.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "kapal-disk-full"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIPPED: cannot mount a tmpfs (needs root)");
            return None;
        }
        Some(Tmpfs { path: dir.path().to_path_buf(), _dir: dir })
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "remounting the tmpfs");
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

#[tokio::test]
async fn disk_full_fails_writes_cleanly_and_recovers() {
    let Some(fs) = Tmpfs::mount("2m") else { return };
    let path = fs.path().join("state.db");
    let store = SqliteStore::open(&path).unwrap();
    let mut acknowledged = Vec::new();
    let mut failure = None;
    for i in 0..10_000 {
        match store.create(&format!("/registry/full/{i}"), vec![b'x'; 4096]).await {
            Ok(kv) => acknowledged.push((kv.key, kv.mod_revision)),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let failure = failure.expect("2 MiB should fill up");
    assert!(matches!(failure, StoreError::Unavailable(ref m) if m.contains("disk full")), "{failure:?}");
    assert!(!acknowledged.is_empty());
    // Still full: reads work, writes keep failing, and nothing acknowledged is lost.
    assert!(store.create("/registry/full/again", vec![b'x'; 4096]).await.is_err());
    for (key, rev) in &acknowledged {
        assert_eq!(store.get(key).await.unwrap().map(|kv| kv.mod_revision), Some(*rev), "{key}");
    }
    // Space returns: writes resume, revisions continue.
    fs.resize("64m");
    let last = acknowledged.last().map(|(_, r)| *r).unwrap_or(0);
    let kv = store.create("/registry/full/after", vec![b'y'; 4096]).await.expect("writes resume when space returns");
    assert!(kv.mod_revision > last);
    drop(store);
    let reopened = SqliteStore::open(&path).unwrap();
    for (key, rev) in &acknowledged {
        assert_eq!(reopened.get(key).await.unwrap().map(|kv| kv.mod_revision), Some(*rev), "{key} after reopen");
    }
    assert!(reopened.get("/registry/full/after").await.unwrap().is_some());
}
